"""Release commands: run once before a version enters an environment; a failure switches nothing."""

from services.choices import OperationState, Outcome
from services.models import Event
from tests.factories import CodeVersionFactory, NodeFactory
from versions.models import Environment, Instance

from .conftest import env_version, routes
from .test_deploy import deploy


def test_it_runs_the_release_command_once_with_the_environment_before_the_version_serves(service, proxy, fleet, queue):
    NodeFactory(service=service)  # two backend nodes: the command still runs once
    v3 = CodeVersionFactory(service=service, label="v3", release_command="python manage.py migrate")

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    releases = fleet.calls_to("run_release")
    assert len(releases) == 1
    spec = releases[0][2]
    assert spec["command"] == "python manage.py migrate" and spec["label"] == "v3"
    assert spec["env"]["CONPAAS_ENV"] == "production"
    # before any instance of v3 started
    first_start = next(
        i for i, c in enumerate(fleet.calls) if c[1] == "put_instance" and c[2] == f"{proxy.name}-v{v3.pk}"
    )
    assert fleet.calls.index(releases[0]) < first_start
    event = Event.objects.get(service=service, action="release")
    assert event.outcome == Outcome.SUCCEEDED and "ran python manage.py migrate" in event.message


def test_a_failing_release_command_stops_the_deploy_and_switches_nothing(service, proxy, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3", release_command="python manage.py migrate")
    fleet.releases["v3"] = (1, "django.db.utils.OperationalError: no such table: wiki_page")

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert operation.error == (
        "the release command of v3 failed (exit 1); nothing was switched (production still serves v1)"
    )
    assert env_version(service, "production") == "v1"
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert not Instance.objects.filter(version=v3).exists()
    assert not any(call[2] == f"{proxy.name}-v{v3.pk}" for call in fleet.calls_to("put_instance"))
    event = Event.objects.get(service=service, action="release")
    assert event.outcome == Outcome.FAILED
    assert "no such table: wiki_page" in event.message  # the output, in the events


def test_a_version_without_a_release_command_runs_none(service, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3")

    assert deploy(queue, service, "production", v3).state == OperationState.SUCCEEDED
    assert fleet.calls_to("run_release") == []
    assert Environment.objects.get(service=service, name="production").version == v3
