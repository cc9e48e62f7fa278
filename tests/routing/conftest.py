import pytest

from routing.table import push
from services import agent
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory
from tests.fakes import FakeFleet
from versions.instances import Release, ensure_instances
from versions.models import Environment


@pytest.fixture
def fleet(monkeypatch) -> FakeFleet:
    """The routers and instances of these tests: the in-memory agents (tests/fakes.py)."""
    fleet = FakeFleet()
    monkeypatch.setattr(agent, "client_for", fleet.client)
    return fleet


def router_reads(fleet: FakeFleet) -> list[str]:
    """The nodes whose router was asked for its status, in order."""
    return [node for node, _, _ in fleet.calls_to("get_proxy")]


@pytest.fixture
def shop(db, fleet):
    """A running service on one node that routes and runs v1 (production) and v2 (development)."""
    service = ServiceFactory(name="shop")
    NodeFactory(service=service, name="shop-1", is_proxy=True, cloud="local")
    for name, label in (("production", "v1"), ("development", "v2")):
        version = CodeVersionFactory(service=service, label=label)
        environment = Environment.objects.get(service=service, name=name)
        ensure_instances(service, Release.of(environment, version))
        Environment.objects.filter(pk=environment.pk).update(version=version)
    push(service)
    fleet.calls.clear()  # what the tests count starts here
    return service
