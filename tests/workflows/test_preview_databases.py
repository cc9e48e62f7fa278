"""Preview databases' workflow against the fake agent: when an environment's copy is made, used,
kept and dropped. The copying itself (pg_dump | psql, Redis COPY) is services/database_copies.py, tested
on real servers in tests/services/test_database_copies.py and end to end in tests/e2e; here it is recorded."""

import pytest

from services import database_copies
from services.choices import OperationKind, OperationState
from services.errors import OperationFailed
from services.models import Event, Link, Operation
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory
from versions.models import DatabaseCopy, Environment, Instance
from workflows.environments import change_environment, delete_environment


@pytest.fixture
def made(monkeypatch) -> list[tuple]:
    """What services.database_copies was asked to do: ("make" | "drop", target name, copy name)."""
    calls = []
    monkeypatch.setattr(database_copies, "make_copy", lambda service, name: calls.append(("make", service.name, name)))
    monkeypatch.setattr(database_copies, "drop_copy", lambda service, name: calls.append(("drop", service.name, name)))
    return calls


@pytest.fixture
def web(service, alice):
    """The workflow fixture's service, linked to a running postgresql service named db."""
    db = ServiceFactory(owner=service.owner, name="db", runtime="postgresql", state="running")
    NodeFactory(service=db, is_proxy=False, data_port=5433)
    Link.objects.create(service=service, target=db)
    return service


def deploy_with_copy(queue, service, copy=True):
    development = Environment.objects.get(service=service, name="development")
    return queue.start(lambda: change_environment(development, service.owner, database_copy=copy))


def development_url(service) -> str:
    development = Environment.objects.get(service=service, name="development")
    instance = Instance.objects.filter(version=development.version, settings_key=development.settings_key).first()
    return instance.spec["env"]["DATABASE_URL"]


def test_a_copy_is_made_once_used_by_the_environment_alone_and_dropped_when_turned_off(web, queue, made):
    assert deploy_with_copy(queue, web).state == OperationState.SUCCEEDED
    assert made == [("make", "db", "copy_1")]
    assert development_url(web).endswith("/copy_1")
    assert not DatabaseCopy.objects.filter(environment__name="production").exists()

    # Deploying again keeps the copy (a preview's data is not lost by a deploy).
    development = Environment.objects.get(service=web, name="development")
    again = queue.start(lambda: change_environment(development, web.owner, settings={"A": "1"}))
    assert again.state == OperationState.SUCCEEDED and made == [("make", "db", "copy_1")]

    assert deploy_with_copy(queue, web, copy=False).state == OperationState.SUCCEEDED
    assert made[-1] == ("drop", "db", "copy_1")
    assert not DatabaseCopy.objects.exists()
    assert development_url(web).endswith("/conpaas")


def test_a_failed_copy_stops_the_deploy_and_keeps_nothing(web, queue, monkeypatch, made):
    def fail(service, name):
        raise OperationFailed("copying the production database into copy_1 failed: ERROR: out of disk")

    monkeypatch.setattr(database_copies, "make_copy", fail)
    development = Environment.objects.get(service=web, name="development")
    before = (development.version_id, development.settings_key)

    operation = deploy_with_copy(queue, web)

    assert operation.state == OperationState.FAILED
    assert "out of disk" in operation.error
    development.refresh_from_db()
    assert (development.version_id, development.settings_key, development.database_copy) == (*before, False)
    assert not DatabaseCopy.objects.exists()
    assert made == [("drop", "db", "copy_1")]  # whatever half of it was made
    assert Event.objects.filter(service=web, action="database.copy", outcome="failed").exists()


def test_a_copy_waits_for_a_dump_still_loading_into_the_database(web, queue, made, settings):
    settings.CONPAAS_LOAD_WAIT = 0
    db = web.links.get().target
    Operation.objects.create(service=db, kind=OperationKind.LOAD, state=OperationState.RUNNING)

    operation = deploy_with_copy(queue, web)

    assert operation.state == OperationState.FAILED
    assert "a dump is still loading into db" in operation.error
    assert made == [] and not DatabaseCopy.objects.exists()


def test_deleting_the_environment_drops_its_copy(web, queue, made):
    deploy_with_copy(queue, web)
    delete_environment(Environment.objects.get(service=web, name="development"), web.owner)
    assert made[-1] == ("drop", "db", "copy_1")
    assert not DatabaseCopy.objects.exists()


def test_two_environments_get_two_copies(web, queue, made):
    from workflows.environments import add_environment

    staging = add_environment(web, "staging", web.owner, database_copy=True)
    deploy_with_copy(queue, web)
    queue.start(lambda: change_environment(staging, web.owner, version=CodeVersionFactory(service=web, label="v3")))
    assert sorted(made) == [("make", "db", "copy_1"), ("make", "db", "copy_2")]
