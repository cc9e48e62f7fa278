"""`conpaas tokens`, `tokens revoke` and `logout` against a live control plane: the server revokes
the token, and an old token gets 401 afterwards; `login` refused by a sign-in lockout."""

import pytest
import requests
from django.core.management import call_command

from conpaas_cli import config
from tests.cli.conftest import PASSWORD

USER = "tina"


@pytest.fixture
def tina(server):
    server.create_user(USER, PASSWORD)
    return USER


@pytest.fixture
def login(cli, server, tina, monkeypatch):
    """Logs the CLI in as tina with `conpaas login`; returns the token it stored."""

    def run() -> str:
        monkeypatch.setenv("CONPAAS_PASSWORD", PASSWORD)
        result = cli("login", server.url, "--username", USER)
        assert result.code == 0, result.err
        return config.load()["token"]

    return run


def answers(server, token: str) -> int:
    headers = {"Authorization": f"Token {token}"}
    return requests.get(server.url + "/api/v1/services/", headers=headers, timeout=30).status_code


def test_it_lists_the_users_tokens_and_marks_this_logins(cli, login, alice):
    token = login()

    table = cli("tokens")

    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "TOKEN", "CREATED", "EXPIRES", "LAST", "USED", "CURRENT"]
    ours = [row for row in rows if row.endswith("this login")]
    assert len(ours) == 1 and f" {token[:8]}… " in ours[0]
    listed = cli("tokens", "list", "--json")
    assert listed.code == 0, listed.err
    alices = {t["id"] for t in alice.get("/api/v1/auth/tokens/").json()}
    assert alices and not alices & {t["id"] for t in listed.json()}, "only tina's own tokens"
    assert [t["prefix"] for t in listed.json() if t["current"]] == [token[:8]]


def test_it_revokes_a_token_by_its_id(cli, login, server, alice):
    first = login()
    second = login()  # this login now holds the second token
    first_id = next(t["id"] for t in cli("tokens", "--json").json() if first.startswith(t["prefix"]))

    result = cli("tokens", "revoke", first_id)

    assert (result.code, result.out) == (0, f"revoked token {first_id}\n")
    assert answers(server, first) == 401
    assert answers(server, second) == 200
    again = cli("tokens", "revoke", first_id)
    assert (again.code, again.err) == (1, f"error: you have no token with id {first_id}\n")
    alices = alice.get("/api/v1/auth/tokens/").json()[0]["id"]
    others = cli("tokens", "revoke", alices)
    assert (others.code, others.err) == (1, f"error: you have no token with id {alices}\n")
    assert alice.get("/api/v1/services/").status_code == 200


def test_revoking_this_logins_own_token_logs_out(cli, login, server, config_file):
    token = login()
    current = next(t["id"] for t in cli("tokens", "--json").json() if t["current"])

    result = cli("tokens", "revoke", current)

    assert result.code == 0, result.err
    assert result.out == f"revoked token {current}, the one this login used: logged out\n"
    assert not config_file.exists()
    assert answers(server, token) == 401


def test_logout_revokes_the_token_on_the_server(cli, login, server, config_file):
    token = login()
    assert answers(server, token) == 200

    result = cli("logout")

    assert (result.code, result.out) == (0, "logged out (token revoked)\n")
    assert not config_file.exists()
    assert answers(server, token) == 401


def test_logout_with_a_token_the_server_no_longer_takes(cli, server, config_file):
    config.save({"url": server.url, "token": "0" * 64, "username": USER})

    result = cli("logout")

    assert (result.code, result.out) == (0, "logged out (the token had already expired or been revoked)\n")
    assert not config_file.exists()


def test_the_token_commands_need_a_login_and_an_id(cli, config_file):
    listed = cli("tokens")
    assert (listed.code, listed.err) == (3, "error: not logged in (run: conpaas login URL)\n")
    assert cli("tokens", "revoke", "1").code == 3
    bad = cli("tokens", "revoke", "abc")
    assert bad.code == 2 and "invalid int value: 'abc'" in bad.err
    assert cli("tokens", "revoke").code == 2


def test_login_says_when_sign_ins_are_locked_out(cli, server, tina, config_file, monkeypatch):
    monkeypatch.setenv("CONPAAS_PASSWORD", "not-the-password")
    refusals = [cli("login", server.url, "--username", USER).err for _ in range(10)]  # CONPAAS_LOGIN_FAILURES

    assert refusals[:9] == ["error: login refused: unable to sign in with that username and password\n"] * 9
    locked = (
        "error: login refused: too many failed sign-ins for this account or from this address; try again in 15 min\n"
    )
    assert refusals[9] == locked
    monkeypatch.setenv("CONPAAS_PASSWORD", PASSWORD)
    right = cli("login", server.url, "--username", USER)
    assert (right.code, right.err) == (1, locked)
    assert not config_file.exists()
    raw = requests.post(server.url + "/api/v1/auth/token/", json={"username": USER, "password": PASSWORD}, timeout=30)
    assert raw.status_code == 429 and 890 <= int(raw.headers["Retry-After"]) <= 900

    call_command("axes_reset_username", USER)  # what an operator does; or wait out the cool-off

    assert cli("login", server.url, "--username", USER).code == 0
