"""`conpaas login` / `logout`, and the exits for not being logged in or not reaching the server (against
`server`, the live control plane with the fake fleet)."""

import io
import json
import os
import stat
import subprocess
import sys

from conpaas_common.procs import free_port
from tests.cli.conftest import PASSWORD
from tests.harness import REPO


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_it_logs_in_and_stores_the_token_readable_by_the_owner_only(cli, alice, server, tmp_path, monkeypatch):
    monkeypatch.delenv("CONPAAS_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))

    result = cli("login", server.url + "/", "--username", "alice", "--password-stdin")

    assert result.code == 0, result.err
    path = tmp_path / "xdg" / "conpaas" / "config.json"
    assert f"logged in to {server.url} as alice" in result.out
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    stored = json.loads(path.read_text())
    assert stored["url"] == server.url and stored["username"] == "alice" and stored["token"]

    listed = cli("services", "list")
    assert listed.code == 0, listed.err
    assert listed.out.startswith("ID")


def test_it_takes_the_password_from_the_environment_and_prompts_for_the_username(
    cli, alice, server, config_file, monkeypatch
):
    monkeypatch.setenv("CONPAAS_PASSWORD", PASSWORD)
    monkeypatch.setattr("sys.stdin", io.StringIO("alice\n"))

    result = cli("login", server.url)

    assert result.code == 0, result.err
    assert "Username:" in result.err
    assert mode(config_file) == 0o600


def test_it_refuses_a_wrong_password(cli, alice, server, config_file, monkeypatch):
    monkeypatch.setenv("CONPAAS_PASSWORD", "not-the-password")

    result = cli("login", server.url, "--username", "alice")

    assert result.code == 1
    assert result.err.startswith("error: login refused: ")
    assert len(result.err.strip().splitlines()) == 1
    assert not config_file.exists()


def test_it_says_not_logged_in_when_the_token_is_refused(cli, server, config_file):
    from conpaas_cli import config

    config.save({"url": server.url, "token": "0" * 40, "username": "alice"})

    result = cli("services", "list")

    assert result.code == 3
    assert result.err == "error: not logged in (run: conpaas login URL)\n"


def test_it_says_not_logged_in_without_a_stored_login(cli, config_file):
    result = cli("nodes", "shop")

    assert result.code == 3
    assert result.err == "error: not logged in (run: conpaas login URL)\n"


def test_it_exits_3_when_the_server_cannot_be_reached(cli, config_file, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("CONPAAS_PASSWORD", "whatever")

    login = cli("login", url, "--username", "alice")
    assert login.code == 3
    assert login.err == f"error: cannot reach {url}: Connection refused\n"

    from conpaas_cli import config

    config.save({"url": url, "token": "t", "username": "alice"})
    listed = cli("services", "list")
    assert listed.code == 3
    assert listed.err == f"error: cannot reach {url}: Connection refused\n"


def test_it_says_no_password_was_given_when_there_is_no_terminal(cli, config_file, monkeypatch):
    def no_terminal(prompt):
        raise EOFError

    monkeypatch.delenv("CONPAAS_PASSWORD", raising=False)
    monkeypatch.setattr("getpass.getpass", no_terminal)

    login = cli("login", "http://127.0.0.1:1", "--username", "alice")

    assert login.code == 2
    assert login.err == "error: no password given (use --password-stdin or CONPAAS_PASSWORD)\n"


def test_it_logs_out_here_when_the_server_cannot_be_reached_and_says_the_token_lives_on(cli, config_file):
    from conpaas_cli import config

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config.save({"url": url, "token": "t", "username": "alice"})

    result = cli("logout")

    assert result.code == 3
    assert result.err == (
        f"error: cannot reach {url}: Connection refused; "
        "logged out here, but the token is not revoked: it works until it expires\n"
    )
    assert not config_file.exists()
    again = cli("logout")
    assert (again.code, again.out) == (0, "not logged in\n")


def test_it_logs_out_of_a_login_file_it_cannot_read(cli, config_file):
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{not json")

    result = cli("logout")

    assert (result.code, result.out) == (0, "logged out\n")
    assert not config_file.exists()


def test_it_exits_2_on_usage_errors(cli):
    assert cli().code == 2
    assert cli("services").code == 2
    bad_role = cli("scale", "shop", "database", "2")
    assert bad_role.code == 2 and "invalid choice" in bad_role.err
    assert cli("login", "paas.example.org", "--username", "a").code == 2
    assert cli("login", "http://x", "--password-stdin").code == 2


def test_it_runs_as_a_program(alice, server, tmp_path):
    """The real entry point, in a subprocess: log in from a script, then list."""
    env = {**os.environ, "CONPAAS_CONFIG": str(tmp_path / "config.json")}
    env.pop("CONPAAS_PASSWORD", None)

    def conpaas(*argv, stdin=""):
        return subprocess.run(
            [sys.executable, "-m", "conpaas_cli", *argv],
            input=stdin,
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    login = conpaas("login", server.url, "-u", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    assert login.returncode == 0, login.stderr
    assert mode(tmp_path / "config.json") == 0o600

    listed = conpaas("--json", "services", "list")
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)

    unknown = conpaas("services", "show", "no-such-service")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no service named 'no-such-service' (you have")
