"""Workflow unit tests: the real workflows against the fake agent and an in-memory cloud.

Operations run inline: django-q's `async_task` only records the operation, and `queue.run()`
runs what was recorded, as a worker would, until nothing is left."""

import pytest

from routing.table import push
from services import operations
from services.models import Service
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory
from tests.fake_platform import cloud_fixture, fleet_fixture, pauses_fixture, store_fixture  # noqa: F401
from tests.fakes import FakeFleet
from versions.instances import Release, ensure_instances
from versions.models import Environment
from workflows.tasks import run_operation


@pytest.fixture(autouse=True)
def _fake_platform(fleet, cloud, pauses) -> None:
    """Every workflow test runs on the fake fleet and the memory cloud (tests/fake_platform.py)."""


class Queue(list):
    def __init__(self, capture_on_commit):
        super().__init__()
        self.capture_on_commit = capture_on_commit

    def record(self, func, operation_id, **kwargs):
        self.append(operation_id)

    def run(self) -> None:
        while self:
            run_operation(self.pop(0))

    def start(self, request):
        """Call `request()` (it starts an operation, enqueued on commit), run the queue, return the operation."""
        with self.capture_on_commit(execute=True):
            operation = request()
        self.run()
        operation.refresh_from_db()
        return operation


@pytest.fixture(autouse=True)
def queue(monkeypatch, django_capture_on_commit_callbacks) -> Queue:
    queue = Queue(django_capture_on_commit_callbacks)
    monkeypatch.setattr(operations, "async_task", queue.record)
    return queue


def serve(service: Service, environment_name: str, version) -> None:
    """Point an environment at a version already running, as a finished deploy leaves it."""
    environment = Environment.objects.get(service=service, name=environment_name)
    ensure_instances(service, Release.of(environment, version))
    Environment.objects.filter(pk=environment.pk).update(version=version)
    push(service)


@pytest.fixture
def service() -> Service:
    """A running service on one node with both roles: v1 in production, v2 in development."""
    service = ServiceFactory()
    NodeFactory(service=service, is_proxy=True)
    serve(service, "production", CodeVersionFactory(service=service, label="v1"))
    serve(service, "development", CodeVersionFactory(service=service, label="v2"))
    return service


@pytest.fixture
def proxy(service):
    return service.proxy_nodes().get()


def version(service, label: str):
    return service.versions.get(label=label)


def env_version(service, name: str) -> str:
    return Environment.objects.get(service=service, name=name).version.label


def routes(fleet: FakeFleet, proxy) -> dict[str, str]:
    """What the router routes, by version label."""
    labels = dict(proxy.service.versions.values_list("pk", "label"))
    return {env: labels[int(key.split("-")[0])] for env, key in fleet.routing[proxy.name]["routes"].items()}
