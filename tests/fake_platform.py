"""The fake platform: the fixtures that put the fake agents (tests/fakes.py FakeFleet) and the
in-memory cloud in place of real nodes, with the settings that make a fake node's timeouts
short. The workflow tests use them with operations run inline (tests/workflows/conftest.py);
the CLI tests behind a live server, with operations run by a worker thread (tests/cli/conftest.py)."""

import queue
import threading

import pytest
from django.db import connections

from services import agent, clouds, nodes
from tests.fakes import FakeFleet, MemoryCloud
from workflows.tasks import run_operation

# Named apart from the fixtures (name=…): a conftest imports them to use them, and a test's
# parameter `fleet` then names the fixture, not the imported function.


@pytest.fixture(name="fleet")
def fleet_fixture(db, monkeypatch, settings) -> FakeFleet:
    settings.CONPAAS_CLOUD = "memory"
    settings.CONPAAS_HEALTH_TIMEOUT = 0  # an unhealthy version fails at its first check
    settings.CONPAAS_BOOT_TIMEOUT = 1
    settings.CONPAAS_DRAIN_TIMEOUT = 0
    settings.CONPAAS_PACKAGE_PROXY_URL = "http://127.0.0.1:9"  # builds run in the fake cloud's sandbox
    fleet = FakeFleet()
    monkeypatch.setattr(agent, "client_for", fleet.client)
    return fleet


@pytest.fixture(name="cloud")
def cloud_fixture(monkeypatch, fleet) -> MemoryCloud:
    cloud = MemoryCloud(fleet.calls, fleet.unreachable)
    monkeypatch.setattr(clouds, "get_cloud", lambda name=None: cloud)
    return cloud


@pytest.fixture(name="pauses")
def pauses_fixture(monkeypatch) -> list[float]:
    """The pauses between boot attempts, recorded instead of slept."""
    pauses = []
    monkeypatch.setattr(nodes, "pause", pauses.append)
    return pauses


class OperationWorker:
    """django-q's workers as one thread of the test process: it runs each operation handed to
    `enqueue` (in place of `services.operations.async_task`), in order, as a worker would, while
    the request that started it has answered already. `wait_idle()` waits until it has run all
    it was given (and what those operations enqueued); `stop()` too, then ends the thread."""

    def __init__(self):
        self.queue: queue.Queue[int | None] = queue.Queue()
        self.crashes: list[BaseException] = []  # what escaped run_operation (a worker would log it)
        self.unfinished = 0
        self.idle = threading.Condition()
        self.thread = threading.Thread(target=self._work, name="operation-worker", daemon=True)
        self.thread.start()

    def enqueue(self, func: str, operation_id: int, **options) -> None:
        with self.idle:
            self.unfinished += 1
        self.queue.put(operation_id)

    def _work(self) -> None:
        while (operation_id := self.queue.get()) is not None:
            try:
                run_operation(operation_id)
            except BaseException as exc:
                self.crashes.append(exc)
            finally:
                connections.close_all()  # this thread's own connections, as a worker ends a task
                with self.idle:
                    self.unfinished -= 1
                    self.idle.notify_all()

    def wait_idle(self, timeout: float = 60) -> None:
        with self.idle:
            assert self.idle.wait_for(lambda: self.unfinished == 0, timeout), f"operations still run after {timeout} s"

    def stop(self, timeout: float = 60) -> None:
        self.wait_idle(timeout)
        self.queue.put(None)
        self.thread.join(timeout)
        assert not self.crashes, f"run_operation raised: {self.crashes!r}"


@pytest.fixture(name="store")
def store_fixture(monkeypatch):
    """Storage services' stores in memory (tests/fakes.py FakeStore)."""
    from services.object_storage import Store
    from tests.fakes import FakeStore

    fake = FakeStore()
    monkeypatch.setattr(Store, "s3", lambda store: fake)
    monkeypatch.setattr(
        Store, "shell", lambda store, script, what, strict=True: fake.shell(store, script, what, strict)
    )
    return fake
