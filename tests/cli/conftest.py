"""CLI fixtures: the control plane the CLI talks to, and a way to run the CLI.

The CLI runs in-process through `conpaas_cli.main.main(argv)`; its login lives in a file per test
(CONPAAS_CONFIG), so no test reads or writes the real user's configuration.

Most tests talk to `server`: the real Django site on a live HTTP server in this process (one
thread, pytest-django's `live_server`), whose nodes are the fake fleet and the memory cloud of
the workflow tests (tests/fake_platform.py) and whose operations a worker thread runs after the
request that started them has answered 202, so the CLI polls them as it polls a real platform.
The few tests of what only real nodes show (test_real_platform.py, marked integration) talk to
`control_plane`, the real one of tests/harness.py."""

import json
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from pytest_django.live_server_helper import LiveServer

from conpaas_cli import config
from conpaas_cli.commands import common as cli_common
from conpaas_cli.commands import operations as cli_operations
from conpaas_cli.main import main
from services import operations, tokens
from services.models import Node
from tests.fake_platform import OperationWorker, cloud_fixture, fleet_fixture, pauses_fixture  # noqa: F401
from tests.fakes import FakeFleet, MemoryCloud
from tests.harness import Api

PASSWORD = "pw-secret-1"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "conpaas" / "config.json"
    monkeypatch.setenv("CONPAAS_CONFIG", str(path))
    monkeypatch.delenv("CONPAAS_PASSWORD", raising=False)
    return path


@pytest.fixture
def cli(capsys, config_file):
    """`cli("services", "list")` runs the CLI in-process; the exit code and what it printed."""

    def run(*argv: str) -> Result:
        capsys.readouterr()  # drop anything printed before this command
        code = main([str(arg) for arg in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def live_server():
    """pytest-django's live server (its name keeps what comes with it: each test that uses it
    gets a database the server's threads see, emptied after), on 127.0.0.1 like the real one."""
    server = LiveServer("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def worker(monkeypatch, fleet) -> OperationWorker:
    worker = OperationWorker()
    monkeypatch.setattr(operations, "async_task", worker.enqueue)
    yield worker
    worker.stop()  # before the database is emptied under it


class FakeApi(Api):
    """The harness's REST client, which waits for an operation by waiting for the worker to have
    run what it was given rather than by polling every 0.2 s (the fake's operations take
    milliseconds), then reads the operation as before."""

    def __init__(self, base: str, token: str, worker: OperationWorker):
        super().__init__(base, token)
        self.worker = worker

    def wait_operation(self, operation: dict, timeout: float = 90) -> dict:
        self.worker.wait_idle(timeout)
        return super().wait_operation(operation, timeout)


@dataclass
class FakeControlPlane:
    """What tests ask of a control plane (tests/harness.py ControlPlane), answered by `server`."""

    url: str
    fleet: FakeFleet
    cloud: MemoryCloud
    worker: OperationWorker

    def create_user(self, username: str, password: str = PASSWORD, staff: bool = False):
        return get_user_model().objects.create_user(username, password=password, is_staff=staff, is_superuser=staff)

    def client(self, username: str, password: str = PASSWORD) -> Api:
        _token, key = tokens.issue(self.create_user(username, password))
        return FakeApi(self.url, key, self.worker)

    def reached(self, service: dict, preview_key: str | None = None) -> list[dict]:
        """The instances (as the fake agents hold them: label, env…) that a request to the service's
        URL, with this preview key, reaches through its router as the router was told last: what a
        real router would serve (test_real_platform.py shows that it does)."""
        proxy = Node.objects.get(service_id=service["id"], is_proxy=True)
        routing = self.fleet.routing[proxy.name]
        environment = routing["preview_keys"].get(preview_key, "production")
        servers = routing["backends"].get(routing["routes"].get(environment), [])
        return [self.fleet.instances[server["name"]] for server in servers]

    def served(self, service: dict, preview_key: str | None = None) -> str | None:
        """The label of the version that serves a request with this preview key (or None)."""
        labels = {instance["label"] for instance in self.reached(service, preview_key)}
        assert len(labels) <= 1, labels
        return labels.pop() if labels else None


@pytest.fixture
def server(live_server, fleet, cloud, pauses, worker, monkeypatch) -> FakeControlPlane:
    # The fake's operations take milliseconds: the CLI polls them every 20 ms rather than from
    # 0.2 s up (that schedule is test_output.py's to check), and follows events and logs every 0.1 s.
    monkeypatch.setattr(cli_operations, "POLL_SECONDS", (0.02,))
    monkeypatch.setattr(cli_common, "FOLLOW_SECONDS", 0.1)
    return FakeControlPlane(live_server.url, fleet, cloud, worker)


@pytest.fixture
def alice(server) -> Api:
    """A user with an API client, to set up and check what the CLI does."""
    return server.client("alice")


def log_in(api: Api, username: str) -> Api:
    """Store `api`'s login as the CLI's, as `conpaas login` does."""
    token = api.session.headers["Authorization"].removeprefix("Token ")
    config.save({"url": api.base, "token": token, "username": username})
    return api


@pytest.fixture
def logged_in(server, alice, config_file) -> Api:
    """The CLI logged in as alice (the login command itself is tested in test_login.py)."""
    return log_in(alice, "alice")
