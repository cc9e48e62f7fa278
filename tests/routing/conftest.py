import pytest

from services.agent import AgentClient, AgentError
from services.models import Node
from tests.factories import CodeVersionFactory, ServiceFactory
from versions.models import Instance, InstanceState


class Routers:
    """A stand-in for the agents at AgentClient.call: answers GET /v1/proxy with each version's
    servers UP (or DOWN, those named in `down`), takes a PUT /v1/proxy, and records the calls;
    `unreachable` makes it give no answer."""

    def __init__(self):
        self.calls = []
        self.down: set[str] = set()
        self.unreachable = False

    def call(self, client, method, path, body=None, timeout=None):
        self.calls.append((client.node.name, method, path))
        if self.unreachable:
            raise AgentError(f"node {client.node.name} did not answer: connection refused")
        if method == "PUT" and path.startswith("/v1/proxy"):
            return {}  # a swap's push: applied
        assert (method, path) == ("GET", "/v1/proxy"), f"unexpected agent call {method} {path}"
        backends = {}
        for instance in Instance.objects.filter(node__service=client.node.service).select_related("node"):
            up = instance.name not in self.down
            server = {"status": "UP" if up else "DOWN", "check": "L7OK" if up else "L7STS", "healthy": up}
            backends.setdefault(str(instance.version_id), {"servers": {}})["servers"][instance.name] = server
        return {"backends": backends}


@pytest.fixture
def routers(monkeypatch) -> Routers:
    routers = Routers()
    monkeypatch.setattr(AgentClient, "call", lambda client, *args, **kw: routers.call(client, *args, **kw))
    return routers


@pytest.fixture
def shop(db):
    """A running service on one node that routes and runs v1 (production) and v2 (development)."""
    service = ServiceFactory(name="shop")
    node = Node.objects.create(
        service=service,
        name="shop-1",
        cloud="local",
        is_proxy=True,
        is_backend=True,
        state="running",
        address="127.0.0.1",
        agent_port=9,
        http_port=8080,
    )
    v1, v2 = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    for version in (v1, v2):
        Instance.objects.create(node=node, version=version, port=1, state=InstanceState.RUNNING)
    service.environments.filter(name="production").update(version=v1)
    service.environments.filter(name="development").update(version=v2)
    return service
