"""CLI fixtures: one real control plane for the CLI tests (see tests/harness.py), and a way to run the CLI.

The CLI runs in-process through `conpaas_cli.main.main(argv)`; its login lives in a file per test
(CONPAAS_CONFIG), so no test reads or writes the real user's configuration."""

import json
from dataclasses import dataclass

import pytest

from conpaas_cli import config
from conpaas_cli.main import main

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
def alice(control_plane):
    """A user with an API client (tests/harness.py), to set up and check what the CLI does."""
    return control_plane.client("alice", PASSWORD)


@pytest.fixture
def logged_in(control_plane, alice, config_file):
    """The CLI logged in as alice (the login command itself is tested in test_login.py)."""
    token = alice.session.headers["Authorization"].removeprefix("Token ")
    config.save({"url": control_plane.url, "token": token, "username": "alice"})
    return alice
