"""The CLI against the real platform (`control_plane`, tests/harness.py: real nodes, routers and
instances), for what only real nodes show: a pushed app answers, a preview and a swap reach
it, a request lands in its access log, the manifest example's front reaches its api, a dump
loads into PostgreSQL and psql and pg_dump read it back, each example serves what it says.
Everything else about the CLI is tested against `server` (the fake fleet), in the other files."""

import io
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import WSGI_LABEL_APP
from tests.cli.conftest import PASSWORD, log_in
from tests.harness import REPO

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABEL = re.compile(r"^([0-9a-f]{7,40}|\d{8}-\d{6})(-\d+)?$")  # a short commit, or the time


@pytest.fixture(scope="module")
def alice(control_plane):
    """A user of the real control plane with an API client, to set up and check what the CLI does."""
    return control_plane.client("alice", PASSWORD)


@pytest.fixture
def logged_in(alice, config_file):
    return log_in(alice, "alice")


def environment(api, service, name: str) -> dict:
    return api.get(f"/api/v1/services/{service['id']}/environments/{name}/").json()


def access_lines_with(cli, service: str, mark: str) -> list[dict]:
    found = cli("logs", service, "--json").json()["lines"]
    return [line for line in found if line["file"] == "access.log" and mark in line["line"]]


def test_the_python_example_is_pushed_previewed_swapped_and_logged(
    cli, alice, control_plane, config_file, monkeypatch, tmp_path
):
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    login = cli("login", control_plane.url, "--username", "alice", "--password-stdin")
    assert login.code == 0, login.err
    created = cli("services", "create", "cli-real", "--json")
    assert created.code == 0, created.err
    service = created.json()
    try:
        (tmp_path / "first").mkdir()
        (tmp_path / "first" / "wsgi.py").write_text(WSGI_LABEL_APP)
        first = cli("push", "cli-real", tmp_path / "first", "--env", "production", "--label", "first")
        assert first.code == 0, first.err
        assert requests.get(service["url"], timeout=10).text == "first\n"

        result = cli("push", "cli-real", EXAMPLES / "python", "--env", "staging")

        assert result.code == 0, result.err
        progress = result.err.splitlines()
        assert progress[0].startswith("packed 1 file (") and " into python.tar.gz (" in progress[0], result.err
        assert progress[1].startswith("uploaded ") and " to cli-real (id " in progress[1], result.err
        label = progress[1].split()[1]
        assert LABEL.match(label), label
        assert progress[2] == "created environment staging"
        assert progress[3:] and all(line.startswith("deploy #") for line in progress[3:]), result.err
        # A deploy takes a second or more (staging, health check, routing): some of its steps are seen.
        assert any(not line.endswith((": queued", ": running")) for line in progress[3:]), result.err
        staging = environment(alice, service, "staging")
        assert result.out.splitlines() == [
            "✓ deploy succeeded",
            f"staging of cli-real now serves {label}",
            f"preview: {staging['preview_url']}",
        ]
        preview = cli("preview", "cli-real", "staging").out.strip()
        assert preview == staging["preview_url"]
        answer = requests.get(preview, timeout=10).text
        assert answer == f"Hello from cli-real: staging serves version {label}\n"

        swapped = cli("swap", "cli-real", "staging")
        assert swapped.code == 0, swapped.err
        assert swapped.out.splitlines()[-1] == "swap back: conpaas swap cli-real staging"
        assert requests.get(service["url"], headers={"X-Conpaas-Env": staging["preview_key"]}, timeout=10).text == (
            "first\n"
        )
        mark = uuid.uuid4().hex
        answer = requests.get(service["url"], params={"seen": mark}, timeout=10).text
        assert answer == f"Hello from cli-real: production serves version {label}\n"

        # The request shows in its instance's access log, through the API.
        assert wait_until(lambda: access_lines_with(cli, "cli-real", f"seen={mark}"), timeout=10), cli(
            "logs", "cli-real"
        ).out
    finally:
        alice.wait_operation(alice.delete(f"/api/v1/services/{service['id']}/").json())


def test_the_manifest_example_is_applied_and_its_front_reaches_its_api(cli, control_plane, config_file, tmp_path):
    owner = log_in(control_plane.client("manifest-owner"), "manifest-owner")
    shutil.copytree(EXAMPLES / "manifest", tmp_path / "manifest")
    try:
        result = cli("apply", tmp_path / "manifest" / "manifest.yaml")

        assert result.code == 0, result.err
        assert "greetings is as its manifest says" in result.out
        services = {s["name"]: s for s in owner.get("/api/v1/services/").json()}
        api_url = services["api"]["url"]
        # The front asked the api through API_URL, the api's router as other nodes reach it.
        page = wait_until(
            lambda: (text := requests.get(services["web"]["url"], timeout=10).text).startswith("hello") and text,
            timeout=60,
            message="the front to show the api's greeting",
        )
        assert page.startswith("hello from the api at http://"), page
        assert requests.get(api_url, timeout=10).json()["greeting"] == "hello"
        # The api's release command ran once, before v1 served, its output in the events.
        events = owner.get(f"/api/v1/services/{services['api']['id']}/events/").json()
        releases = [e for e in events if e["action"] == "release"]
        assert len(releases) == 1 and releases[0]["outcome"] == "succeeded", releases
        assert "release of v1 for production: nothing to migrate" in releases[0]["message"]
    finally:
        for application in owner.get("/api/v1/applications/").json():
            for operation in owner.delete(f"/api/v1/applications/{application['id']}/").json():
                owner.wait_operation(operation)


@pytest.fixture
def database(logged_in):
    response = logged_in.create_service("clidb", "postgresql")
    yield response
    logged_in.wait_operation(logged_in.delete(f"/api/v1/services/{response['id']}/").json())


def conpaas(config_file, *argv, stdin=""):
    """The CLI in a process of its own: `db` execs the database client in its place."""
    env = {**os.environ, "CONPAAS_CONFIG": str(config_file)}
    argv = [sys.executable, "-m", "conpaas_cli", *argv]
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_a_dump_loads_with_a_counter_then_psql_and_pg_dump_read_it(cli, config_file, database, tmp_path):
    dump = tmp_path / "wiki.sql"
    # Big enough that a load outlasts a few of the CLI's polls, even on a quiet machine.
    rows = "".join(f"{i}\tpage {i}\n" for i in range(2_000_000))
    dump.write_text(f"CREATE TABLE pages (id int, title text);\nCOPY pages FROM stdin;\n{rows}\\.\n")
    result = cli("db", "clidb", "load", dump)
    assert result.code == 0, result.err
    assert "2,000,000 rows loaded into clidb" in result.out
    # The counter while it loads: one line per change when not on a terminal.
    assert any("bytes read" in line and "rows loaded" in line for line in result.err.splitlines()), result.err

    shell = conpaas(config_file, "db", "clidb", stdin="SELECT count(*) FROM pages;\n")
    assert shell.returncode == 0, shell.stderr
    assert "2000000" in shell.stdout

    exported = conpaas(config_file, "db", "clidb", "dump")
    assert exported.returncode == 0, exported.stderr
    assert "COPY public.pages" in exported.stdout and "1999999\tpage 1999999" in exported.stdout


# The platform paths of every runtime (preview, swap, access logs) are tested on every pass by
# tests/e2e/test_blue_green.py; here only what each example says, so once a run.
@pytest.mark.one_pass
@pytest.mark.parametrize(
    ("runtime", "says"),
    [
        ("php", "Hello from ex-php: production serves version ex-1 (PHP "),
        ("static", "<h1>Hello from a static site</h1>"),
        ("java", "Hello from ex-java: production serves version ex-1 (Tomcat Apache Tomcat/10"),
    ],
)
def test_each_example_serves_what_it_says(cli, logged_in, runtime, says):
    service = logged_in.create_service(f"ex-{runtime}", runtime)
    try:
        result = cli("push", service["name"], EXAMPLES / runtime, "--env", "production", "--label", "ex-1")
        assert result.code == 0, result.err
        mark = uuid.uuid4().hex
        answer = requests.get(service["url"], params={"seen": mark}, timeout=10)
        assert answer.status_code == 200 and says in answer.text, answer.text

        # The request shows in its instance's access log (nginx's, Tomcat's), through the API.
        assert wait_until(lambda: access_lines_with(cli, service["name"], f"seen={mark}"), timeout=10), cli(
            "logs", service["name"]
        ).out
    finally:
        logged_in.wait_operation(logged_in.delete(f"/api/v1/services/{service['id']}/").json())
