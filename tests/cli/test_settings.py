"""`conpaas settings`, `environments` and `swap --dry-run`: sticky and travelling settings from the
command line, against `server`: its fake agents hold the environment each instance runs with."""

import pytest

from tests.apps import zip_archive

APP = """\
import os


def application(environ, start_response):
    words = [os.environ["CONPAAS_VERSION"], os.environ.get("GREETING", "-"), os.environ.get("API", "-")]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [" ".join(words).encode()]
"""


@pytest.fixture
def service(alice):
    created = alice.create_service("cli-settings")
    for env, label in (("production", "v1"), ("development", "v2")):
        version = alice.upload(created["id"], zip_archive({"wsgi.py": APP + f"# {label}\n"}), label)
        assert version.status_code == 201, version.text
        assert alice.deploy(created["id"], env, version.json()["id"])["state"] == "succeeded"
    return alice.get(f"/api/v1/services/{created['id']}/").json()


def answer(server, service, preview_key: str | None = None) -> str:
    """What APP answers a request with this preview key: the words of its environment variables
    (the agent sets CONPAAS_VERSION to the instance's label)."""
    (answers,) = {
        " ".join([instance["label"], instance["env"].get("GREETING", "-"), instance["env"].get("API", "-")])
        for instance in server.reached(service, preview_key)
    }
    return answers


def preview_key(api, service) -> str:
    environments = api.get(f"/api/v1/services/{service['id']}/environments/").json()
    return next(e for e in environments if e["name"] == "development")["preview_key"]


def test_settings_are_set_deployed_shown_and_swapped(cli, logged_in, server, service):
    key = preview_key(logged_in, service)
    assert cli("settings", "cli-settings", "production").out == ""

    done = cli("settings", "cli-settings", "production", "GREETING=hello", "--sticky", "API=https://pay.example/?a=b")
    assert done.code == 0, done.err
    assert done.out.strip().endswith("production of cli-settings now runs with its new settings: API, GREETING")
    assert answer(server, service) == "v1 hello https://pay.example/?a=b"  # split on the first =
    assert cli("settings", "cli-settings", "development", "GREETING=hi", "--sticky", "API=sandbox").code == 0
    assert cli("settings", "cli-settings", "production").out.splitlines() == [
        "API=https://pay.example/?a=b  (sticky)",
        "GREETING=hello",
    ]

    plan = cli("swap", "cli-settings", "--dry-run")
    assert plan.code == 0, plan.err
    assert plan.out.splitlines() == [
        "production: v1 -> v2",
        '  GREETING: "hello" -> "hi" (travelling)',
        "development: v2 -> v1",
        '  GREETING: "hi" -> "hello" (travelling)',
        "the versions start with their new environment's settings and database copies and pass their health "
        "checks before the routes flip (this takes as long as a start)",
        "dry run: nothing changed; swap with: conpaas swap cli-settings development",
    ]
    assert answer(server, service) == "v1 hello https://pay.example/?a=b"

    assert cli("swap", "cli-settings").code == 0
    assert answer(server, service) == "v2 hi https://pay.example/?a=b"  # the sticky API stayed
    assert answer(server, service, key) == "v1 hello sandbox"

    unset = cli("settings", "cli-settings", "development", "--unset", "GREETING", "--json")
    assert unset.code == 0, unset.err
    assert unset.json()["state"] == "succeeded"
    assert answer(server, service, key) == "v1 - sandbox"


@pytest.mark.parametrize(
    ("argv", "code", "error"),
    [
        (["9LIVES=x"], 1, "9LIVES: a setting's name is letters"),
        (["CONPAAS_ENV=x"], 1, "CONPAAS_ENV: names starting with CONPAAS_ are the platform's"),
        (["NOEQUALS"], 2, "'NOEQUALS': a setting is NAME=VALUE"),
        (["--unset", "MISSING"], 1, "production of cli-settings has no setting named 'MISSING' (it has"),
        (["X=1", "X=2"], 2, "X is named twice"),
        (["X=1", "--unset", "X"], 2, "X is named twice"),
    ],
)
def test_bad_settings_are_refused_in_one_line_and_change_nothing(cli, logged_in, service, argv, code, error):
    before = cli("settings", "cli-settings", "production").out
    result = cli("settings", "cli-settings", "production", *argv)
    assert result.code == code
    assert error in result.err and len(result.err.splitlines()) == 1
    assert cli("settings", "cli-settings", "production").out == before


def test_environments_are_added_listed_and_deleted(cli, logged_in, service):
    added = cli("environments", "add", "cli-settings", "qa", "--database-copy")
    assert added.code == 0, added.err
    assert added.out.startswith("added environment qa to cli-settings with its own copy of the linked databases")
    listed = cli("environments", "list", "cli-settings").out.splitlines()
    assert listed[0].split() == ["ENVIRONMENT", "VERSION", "SETTINGS", "DATABASE", "COPY", "PREVIEW", "URL"]
    qa = next(line for line in listed if line.startswith("qa "))
    assert " yes " in qa

    refused = cli("swap", "cli-settings", "qa", "--dry-run")
    assert refused.code == 1 and refused.out == ""
    assert refused.err == "error: the swap would be refused now: qa has no version to swap in; deploy one first\n"

    assert cli("environments", "delete", "cli-settings", "qa").code == 0
    assert "qa" not in [e["name"] for e in cli("environments", "list", "cli-settings", "--json").json()]
    production = cli("environments", "delete", "cli-settings", "production")
    assert production.code == 1
    assert production.err == "error: production cannot be deleted (delete the service instead)\n"
    unknown = cli("environments", "delete", "cli-settings", "nope")
    assert unknown.code == 1 and "has no environment named 'nope' (it has: production, development)" in unknown.err
