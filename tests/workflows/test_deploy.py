"""Deploys against the fake agent: the new version started, health-checked and flipped in; and every
way one is refused or fails, each leaving the routes and the rows as they were, the new version's
instances retired, the service free and an Event saying why. What only the real agent, router and
app show (their own words on a crash, the fail-fast on a real HAProxy): tests/e2e/test_operations.py."""

import io
import re
import time

import pytest

from routing.table import answered_errors
from services import operations
from services.choices import OperationKind, OperationState, Outcome
from services.errors import NotFound
from services.models import Event, Operation, Quota, Service
from tests.apps import zip_archive
from tests.factories import CodeVersionFactory, NodeFactory, OperationFactory
from tests.fakes import FakeAgent
from versions import logs
from versions.instances import Release
from versions.models import CodeVersion, Environment, FailedInstanceLog, Instance, InstanceState
from versions.storage import store_version
from workflows.deploy import request_deploy, retire_unused

from .conftest import env_version, routes, version


def deploy(queue, service, environment_name, new_version):
    environment = Environment.objects.get(service=service, name=environment_name)
    return queue.start(lambda: request_deploy(environment, new_version, service.owner))


def assert_nothing_changed(service, proxy, fleet) -> None:
    """v1 in production and v2 in development, in the rows and on the router; the service free."""
    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Service.objects.get(pk=service.pk).locked_by is None


def failure_recorded(operation) -> str:
    """The message of the failed deploy's Event (what the console's activity shows)."""
    return Event.objects.get(operation=operation, action="deploy", outcome=Outcome.FAILED).message


def test_it_deploys_on_every_backend_node_and_flips_the_route(service, proxy, fleet, queue):
    backend = NodeFactory(service=service)
    v3 = CodeVersionFactory(service=service, label="v3")

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert {f"{proxy.name}-v{v3.pk}", f"{backend.name}-v{v3.pk}"} <= set(fleet.instances)
    assert set(Instance.objects.filter(version=v3).values_list("state", flat=True)) == {InstanceState.RUNNING}
    assert env_version(service, "production") == "v3"
    assert routes(fleet, proxy) == {"production": "v3", "development": "v2"}
    assert Event.objects.filter(
        service=service, action="route", outcome=Outcome.SUCCEEDED, message="production now serves v3 (was v1)"
    ).exists()
    # v1 is served by nothing any more: retired on the routers and on the node
    v1 = version(service, "v1")
    assert not Instance.objects.filter(version=v1).exists()
    assert f"{proxy.name}-v{v1.pk}" not in fleet.instances


def test_it_fails_an_unhealthy_version_and_keeps_the_old_route(service, proxy, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.make_unhealthy(f"{proxy.name}-v{v3.pk}")

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert "v3 did not pass its health check" in operation.error
    assert env_version(service, "production") == "v1"
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert not any(call[2]["require_healthy"] for call in fleet.calls_to("put_proxy"))  # never asked to flip
    # the new instances are retired; the old ones keep serving
    assert not Instance.objects.filter(version=v3).exists()
    assert f"{proxy.name}-v{v3.pk}" not in fleet.instances
    assert fleet.healthy(f"{proxy.name}-v{version(service, 'v1').pk}")
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_it_rolls_back_when_a_router_refuses_the_flip(service, proxy, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.refuse(proxy)  # healthy when checked, refused at the flip: it failed in between

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert operation.error.startswith(f"v3 in production is not healthy on {proxy.name}: ")
    assert env_version(service, "production") == "v1"
    gated = [call for call in fleet.calls_to("put_proxy") if call[2]["require_healthy"]]
    assert gated[-1][2]["require_healthy"] == str(v3.pk)
    # after the refusal the routers were told the previous routes again, without v3
    last = fleet.calls_to("put_proxy")[-1][2]
    assert last["require_healthy"] is None
    assert str(v3.pk) not in last["routing"]["backends"]
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert not Instance.objects.filter(version=v3).exists()
    assert f"{proxy.name}-v{v3.pk}" not in fleet.instances
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_it_restores_the_rows_and_the_routes_when_a_router_fails_the_flip(service, proxy, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.refuse(proxy, status=502)  # the gated change fails for another reason than health

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert operation.error.startswith(f"the router on {proxy.name} did not take the new routes")
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] is None  # pushed again, as the rows say
    assert not Instance.objects.filter(version=v3).exists()
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_when_the_routes_cannot_be_restored_the_rows_are_and_the_deploy_fails_saying_so(
    service, proxy, fleet, queue, monkeypatch
):
    v3 = CodeVersionFactory(service=service, label="v3")
    put_proxy = FakeAgent.put_proxy

    def silent_from_the_flip_on(agent, routing, require_healthy=None):
        if require_healthy is not None:
            fleet.unreachable.add(agent.node.name)  # the router's node went away at the flip
        return put_proxy(agent, routing, require_healthy)

    monkeypatch.setattr(FakeAgent, "put_proxy", silent_from_the_flip_on)

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert f"the router on {proxy.name} did not take the new routes: node {proxy.name} did not answer" in (
        operation.error
    )
    # The rows are back; the router, unreachable, still has what it had before the flip.
    gated = [call for call in fleet.calls_to("put_proxy") if call[2]["require_healthy"]]
    assert [call[2]["require_healthy"] for call in gated] == [str(v3.pk)]
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error
    unrestored = Event.objects.get(operation=operation, action="route", outcome=Outcome.FAILED)
    assert unrestored.message.startswith("could not restore the routes after a failed deploy: the router on")
    # v3's instance could not be drained through the silent router: it waits, stopping, for the
    # next retirement once the node answers again.
    assert list(Instance.objects.filter(version=v3).values_list("state", flat=True)) == [InstanceState.STOPPING]
    fleet.unreachable.clear()
    retire_unused(service)
    assert not Instance.objects.filter(version=v3).exists() and f"{proxy.name}-v{v3.pk}" not in fleet.instances


def test_it_fails_when_a_node_cannot_start_the_version(service, proxy, fleet, queue):
    backend = NodeFactory(service=service)
    fleet.unreachable.add(backend.name)
    v3 = CodeVersionFactory(service=service, label="v3")

    operation = deploy(queue, service, "development", v3)

    assert operation.state == OperationState.FAILED
    assert f"v3 could not start on node {backend.name}" in operation.error
    # The instance that did start, on the router's node, is retired; the router never routed it.
    assert f"{proxy.name}-v{v3.pk}" not in fleet.instances
    assert not Instance.objects.filter(version=v3).exists()
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_an_instance_that_exits_at_start_fails_the_deploy_in_its_own_words(service, proxy, fleet, queue):
    v3 = CodeVersionFactory(service=service, label="v3")
    name = f"{proxy.name}-v{v3.pk}"
    fleet.crashing[name] = "RuntimeError: no config"

    operation = deploy(queue, service, "development", v3)

    assert operation.state == OperationState.FAILED
    # The agent's sentence, the node named once and no HTTP status.
    assert operation.error == (
        f"v3 could not start on node {proxy.name}: instance {name} exited at start (code 1): RuntimeError: no config"
    )
    assert not Instance.objects.filter(version=v3).exists()
    assert not [call for call in fleet.calls_to("put_proxy") if str(v3.pk) in call[2]["routing"]["backends"]]
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_a_version_deleted_before_the_request_is_not_found_and_nothing_is_recorded(service):
    v3 = CodeVersionFactory(service=service, label="v3")
    CodeVersion.objects.filter(pk=v3.pk).delete()

    with pytest.raises(NotFound, match=f"{service.name} has no version v3 any more"):
        request_deploy(service.environments.get(name="production"), v3, service.owner)

    assert not Operation.objects.exists() and not Event.objects.filter(action="deploy").exists()


@pytest.mark.parametrize("gone", ["version", "environment"])
def test_a_deploy_whose_version_or_environment_went_away_before_it_ran_fails_changing_nothing(
    service, proxy, fleet, queue, gone
):
    v3 = CodeVersionFactory(service=service, label="v3")
    staging = Environment.objects.create(service=service, name="staging", preview_key="staging-key")
    with queue.capture_on_commit(execute=True):
        operation = request_deploy(staging, v3, service.owner)
    (v3 if gone == "version" else staging).delete()
    fleet.calls.clear()

    queue.run()

    operation.refresh_from_db()
    assert operation.state == OperationState.FAILED
    assert operation.error == "the environment or the version was deleted before the deploy could start"
    assert fleet.calls_to("put_instance") == [] and fleet.calls_to("put_proxy") == []
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error


def test_a_deploy_to_a_busy_service_waits_for_the_holder_then_runs(service, proxy, fleet, queue):
    holder = OperationFactory(service=service, kind=OperationKind.SCALE)
    assert operations.claim(holder)
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.calls.clear()

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.PENDING
    assert operation.progress == f"waiting for scale operation #{holder.pk} to finish"
    assert fleet.calls_to("put_instance") == []
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}

    operations.finish(holder)  # whoever ends an operation starts the next one of its service
    queue.run()

    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert routes(fleet, proxy) == {"production": "v3", "development": "v2"}


def test_a_build_over_the_storage_quota_fails_the_deploy_and_keeps_the_old_route(service, proxy, fleet, queue):
    app = {"wsgi.py": "def application(environ, start_response):\n    return []\n", "requirements.txt": "hello\n"}
    v3 = store_version(service, io.BytesIO(zip_archive(app)), "v3", service.owner, filename="v3.zip")
    Quota.objects.create(user=service.owner, storage_mb=0)
    fleet.calls.clear()

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert operation.error.startswith("the build of v3 is not kept: quota exceeded: storage_mb (0)")
    assert fleet.calls_to("put_instance") == []
    assert_nothing_changed(service, proxy, fleet)
    assert failure_recorded(operation) == operation.error
    assert Event.objects.filter(action="build", outcome=Outcome.FAILED, operation=operation).exists()


def test_it_retires_an_instance_after_the_routers_drained_it(service, proxy, fleet):
    v0 = CodeVersionFactory(service=service, label="v0")
    stale = Instance.objects.create(node=proxy, version=v0, state=InstanceState.RUNNING, port=1)
    fleet.client(proxy).put_instance(stale.name, {"version": str(v0.pk), "label": "v0"})
    fleet.calls.clear()

    retire_unused(service)

    methods = [(method, argument) for _, method, argument in fleet.calls]
    assert [m for m, _ in methods] == ["put_proxy", "delete_instance"]
    drained = methods[0][1]["routing"]
    assert str(v0.pk) not in drained["backends"]  # marked stopping, so no longer routed
    assert methods[1][1] == stale.name
    assert not Instance.objects.filter(pk=stale.pk).exists()
    assert stale.name not in fleet.instances
    assert Event.objects.filter(service=service, action="retire", message__startswith="retired v0").exists()


def test_it_retires_an_instance_whose_node_does_not_answer(service, proxy, fleet):
    backend = NodeFactory(service=service)
    v0 = CodeVersionFactory(service=service, label="v0")
    stale = Instance.objects.create(node=backend, version=v0, state=InstanceState.RUNNING, port=1)
    fleet.unreachable.add(backend.name)

    retire_unused(service)

    assert not Instance.objects.filter(pk=stale.pk).exists()


def test_each_router_server_takes_as_many_requests_at_once_as_its_instance_serves(service, proxy, fleet, queue):
    backend = NodeFactory(service=service)
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.concurrency = 5  # the agents report it with each instance they start

    assert deploy(queue, service, "production", v3).state == OperationState.SUCCEEDED

    servers = fleet.routing[proxy.name]["backends"][str(v3.pk)]
    assert {s["name"]: s["maxconn"] for s in servers} == {f"{proxy.name}-v{v3.pk}": 5, f"{backend.name}-v{v3.pk}": 5}
    assert set(Instance.objects.filter(version=v3).values_list("concurrency", flat=True)) == {5}
    # v2 (development) started before: the concurrency its agent reported then.
    assert {s["maxconn"] for s in fleet.routing[proxy.name]["backends"][str(version(service, "v2").pk)]} == {2}


JAVA_ERROR = [
    "SEVERE: Servlet.service() for servlet [app] threw exception",
    "java.lang.IllegalStateException: no DATABASE_URL",
    *[f"\tat org.example.App.step{chr(97 + n % 26)}{chr(97 + n // 26)}(App.java:{n})" for n in range(40)],
    "Caused by: java.net.ConnectException: refused",
    "\tat org.example.Db.open(Db.java:9)",
]


def test_an_app_that_answers_an_error_fails_its_deploy_at_once_with_its_own_logs(
    service, proxy, fleet, queue, settings
):
    settings.CONPAAS_HEALTH_TIMEOUT, settings.CONPAAS_HEALTH_FAIL_AFTER = 30, 0.5
    v3 = CodeVersionFactory(service=service, label="v3")
    name = f"{proxy.name}-v{v3.pk}"
    fleet.make_unhealthy(name)
    fleet.logs[name] = {
        "instance.log": JAVA_ERROR,
        "access.log": ['"GET / HTTP/1.1" 500'] * 30,
    }

    began = time.monotonic()
    operation = deploy(queue, service, "development", v3)

    assert operation.state == OperationState.FAILED
    assert time.monotonic() - began < 10, "it did not wait for the 30 s timeout"
    assert re.match(
        rf"v3 answers its health check \(GET /\) with HTTP 500, check after check for 0\.\d s \(instance {name}\)\n",
        operation.error,
    )
    assert f"conpaas logs {service.name} development --failed" in operation.error
    # The exception and its cause, not 40 stack frames; no access log lines.
    assert "instance.log: java.lang.IllegalStateException: no DATABASE_URL" in operation.error
    assert "instance.log: Caused by: java.net.ConnectException: refused" in operation.error
    assert "… 37 more frames" in operation.error and "stepnb" not in operation.error
    assert "access.log" not in operation.error
    failure = Event.objects.filter(service=service, action="deploy", outcome=Outcome.FAILED).first()
    assert "no DATABASE_URL" in failure.message, "the event says why too"
    # Its instance is retired, its logs kept.
    assert name not in fleet.instances
    kept = FailedInstanceLog.objects.get(service=service)
    assert (kept.environment, kept.version_label, kept.instance, kept.operation) == (
        "development",
        "v3",
        name,
        operation,
    )
    # in the runtime's order, which a JSON object would lose in PostgreSQL
    assert [file for file, _ in kept.files] == ["instance.log", "access.log"]
    assert kept.files[0][1] == JAVA_ERROR and len(kept.files[1][1]) == 30
    assert env_version(service, "development") == "v2"


def test_a_check_that_changes_its_answer_or_gets_none_waits_for_the_timeout(service, proxy, settings, fleet):
    """Only the same error answered check after check fails at once: a server still starting
    (no answer, L4CON) or one whose answer changes may get better."""
    release = Release.of(service.environments.get(name="development"))
    name = f"{proxy.name}-v{release.backend}"
    statuses = [(proxy, fleet.client(proxy).get_proxy())]
    server = statuses[0][1]["backends"][release.backend]["servers"][name]
    server.update(healthy=False, status="DOWN", check="L7STS", check_code=500)
    assert answered_errors(release, statuses) == {name: "HTTP 500"}
    server.update(check="* L7STS")  # the next check under way: the last one's answer still counts
    assert answered_errors(release, statuses) == {name: "HTTP 500"}
    server.update(check="L4CON", check_code=None)
    assert answered_errors(release, statuses) == {}
    server.update(healthy=True, status="UP", check="L7OK", check_code=200)
    assert answered_errors(release, statuses) == {}


def test_a_deploy_that_fails_to_start_keeps_no_logs_and_says_why_once(service, proxy, fleet, queue, settings):
    settings.CONPAAS_HEALTH_TIMEOUT = 0
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.make_unhealthy(f"{proxy.name}-v{v3.pk}")  # no log lines: nothing kept, no excerpt

    operation = deploy(queue, service, "production", v3)

    assert operation.state == OperationState.FAILED
    assert "v3 did not pass its health check (GET /) within 0 s" in operation.error
    assert "--failed" not in operation.error
    assert not FailedInstanceLog.objects.exists()


def test_kept_logs_are_the_newest_per_service(service, proxy, fleet, queue, settings, monkeypatch):
    monkeypatch.setattr(logs, "KEPT_PER_SERVICE", 2)
    for label in ("v3", "v4", "v5"):
        version_ = CodeVersionFactory(service=service, label=label)
        fleet.make_unhealthy(f"{proxy.name}-v{version_.pk}")
        fleet.logs[f"{proxy.name}-v{version_.pk}"] = {"instance.log": [f"{label} broke"]}
        assert deploy(queue, service, "development", version_).state == OperationState.FAILED
    assert sorted(FailedInstanceLog.objects.values_list("version_label", flat=True)) == ["v4", "v5"]


def test_a_failed_deploy_names_the_status_its_check_expects(service, proxy, fleet, queue, settings):
    settings.CONPAAS_HEALTH_TIMEOUT = 0
    service.health_check_path, service.health_check_status = "/healthz", 200
    service.save()
    v3 = CodeVersionFactory(service=service, label="v3")
    fleet.make_unhealthy(f"{proxy.name}-v{v3.pk}")
    operation = deploy(queue, service, "production", v3)
    assert "v3 did not pass its health check (GET /healthz, expecting 200) within 0 s" in operation.error


def test_the_quoted_lines_leave_out_what_every_check_repeated():
    """Each health check logs the same error with another time and request number: once is enough."""
    repeated = [f"2026/12/07 14:24:{n:02} [error] 9#9: *{n} PHP Fatal error: boom" for n in range(10, 40)]
    excerpt = logs.why({"error.log": ["starting", *repeated, "Stack trace:"], "access.log": ['"GET /" 500']})
    assert excerpt.splitlines() == [
        "  error.log: starting",
        "  error.log: 2026/12/07 14:24:39 [error] 9#9: *39 PHP Fatal error: boom",
        "  error.log: Stack trace:",
    ]
