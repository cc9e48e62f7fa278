"""`conpaas logs` and the logs API against a live control plane (`server`): an access log line of
an instance shows up tagged by its node and instance; -f prints only new lines and Ctrl-C ends it
with 0. The fake agents hold the lines; that a request through a real router writes one is
test_real_platform.py's to show."""

import threading
import uuid

import pytest

from conpaas_cli.commands import common, logs
from tests.apps import label_app


@pytest.fixture
def service(alice):
    """`cli-logs` with the label app in production."""
    created = alice.create_service("cli-logs")
    version = alice.upload(created["id"], label_app("logs"), "v1").json()
    assert alice.deploy(created["id"], "production", version["id"])["state"] == "succeeded"
    return alice.get(f"/api/v1/services/{created['id']}/").json()


def visit(server, service) -> str:
    """A request to a path no other request takes: the access log line its instance writes."""
    path = f"/visit-{uuid.uuid4().hex[:12]}"
    (instance,) = server.reached(service)
    line = f'127.0.0.1 - - [07/Dec/2026:17:00:00 +0000] "GET {path} HTTP/1.1" 200 3 "-" "python-requests/2.32"'
    server.fleet.logs.setdefault(instance["name"], {}).setdefault("access.log", []).append(line)
    return path


def access_lines(api, service, **params) -> list[dict]:
    response = api.get(f"/api/v1/services/{service['id']}/logs/", params=params)
    assert response.status_code == 200, response.text
    return [line for line in response.json()["lines"] if line["file"] == "access.log"]


def test_an_access_line_shows_in_the_apis_logs_tagged_by_node_and_instance(logged_in, server, service):
    path = visit(server, service)
    found = [line for line in access_lines(logged_in, service) if f"GET {path} " in line["line"]]
    assert len(found) == 1
    node = logged_in.get(f"/api/v1/services/{service['id']}/nodes/").json()[0]["name"]
    version = service["environments"][0]["version"]
    assert found[0]["node"] == node and found[0]["instance"] == f"{node}-v{version}"


def test_it_prints_the_recent_lines_tagged_by_instance_and_file(cli, logged_in, server, service):
    path = visit(server, service)
    result = cli("logs", "cli-logs", "-n", "50")
    assert result.code == 0, result.err
    shown = [line for line in result.out.splitlines() if f"GET {path} " in line]
    assert len(shown) == 1 and shown[0].split()[1] == "access.log:", result.out
    assert shown[0].split()[0].endswith(f"-v{service['environments'][0]['version']}")
    as_json = cli("logs", "cli-logs", "production", "--json").json()
    assert as_json["environment"] == "production" and as_json["errors"] == []


def test_it_follows_and_prints_only_new_lines(cli, logged_in, server, service):
    before = visit(server, service)
    paths = []
    later = threading.Timer(0.3, lambda: paths.append(visit(server, service)))
    later.start()
    try:
        result = cli("logs", "cli-logs", "-f", "--follow-seconds", "1")
    finally:
        later.join()
    assert result.code == 0, result.err
    assert result.out.count(f"GET {before} ") == 1, result.out  # printed at first, never again
    assert result.out.count(f"GET {paths[0]} ") == 1, result.out  # the new line, once


def test_ctrl_c_stops_following_with_0(cli, logged_in, service, monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.time, "sleep", interrupted)
    result = cli("logs", "cli-logs", "--follow")
    assert result.code == 0, result.err


def test_it_refuses_an_unknown_environment_or_a_bad_count_in_one_line(cli, logged_in, service):
    result = cli("logs", "cli-logs", "nope")
    expected = "error: cli-logs has no environment named 'nope' (it has: production, development)\n"
    assert result.code == 1 and result.err == expected, result.err
    result = cli("logs", "cli-logs", "-n", "0")
    assert result.code == 1 and "lines" in result.err and len(result.err.splitlines()) == 1, result.err


# What an app that fails every request (its health check too) writes in its instance's log.
FAILING_LOG = [
    "[INFO] Booting worker with pid: 12",
    "[ERROR] Error handling request /",
    "Traceback (most recent call last):",
    '  File "/srv/app/wsgi.py", line 2, in application',
    "RuntimeError: cli-logs has no SECRET_KEY",
]


def test_failed_prints_the_kept_logs_of_the_last_failed_deploy(cli, logged_in, server, service):
    result = cli("logs", "cli-logs", "development", "--failed")
    assert result.code == 1 and result.err == "error: no failed deploy into cli-logs development left logs\n"

    server.fleet.failing["broken"] = {"instance.log": FAILING_LOG}
    broken = logged_in.upload(service["id"], label_app("broken"), "broken").json()
    operation = logged_in.deploy(service["id"], "development", broken["id"])
    assert operation["state"] == "failed" and "RuntimeError: cli-logs has no SECRET_KEY" in operation["error"]

    # development runs nothing: its logs are empty, and say where the failure's logs are
    result = cli("logs", "cli-logs", "development")
    assert result.code == 0 and result.out == ""
    assert "broken's deploy failed at" in result.err and "conpaas logs cli-logs development --failed" in result.err
    result = cli("logs", "cli-logs", "development", "--failed", "-n", "100")
    assert result.code == 0, result.err
    assert result.out.startswith("the logs of broken, kept at "), result.out
    assert any(
        line.endswith("RuntimeError: cli-logs has no SECRET_KEY") and " instance.log: " in line
        for line in result.out.splitlines()
    ), result.out
    result = cli("logs", "cli-logs", "development", "--failed", "-f")
    assert result.code == 1 and "leave out --follow" in result.err


@pytest.mark.parametrize(
    ("before", "now", "new"),
    [
        ([], ["a", "b"], ["a", "b"]),
        (["a", "b"], ["a", "b"], []),
        (["a", "b", "c"], ["b", "c", "d"], ["d"]),
        (["a", "b", "c"], ["c", "d", "e"], ["d", "e"]),
        (["a", "b"], ["x", "y"], ["x", "y"]),  # more new lines than asked for: all of them
        (["a", "b", "c"], ["b", "c", "b", "c"], ["b", "c"]),  # repeated lines: the longest overlap first
    ],
)
def test_new_lines_are_what_follows_the_previous_end(before, now, new):
    assert logs.new_lines(before, now) == new
