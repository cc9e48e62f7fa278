"""`conpaas logs` and the logs API against a live control plane: a request through the router
shows up as its instance's access log line; -f prints only new lines and Ctrl-C ends it with 0."""

import threading
import uuid

import pytest
import requests

from conpaas_cli.commands import common, logs
from conpaas_common.waiting import wait_until
from tests.apps import label_app, zip_archive


@pytest.fixture(scope="module")
def service(alice):
    """`cli-logs` with the label app in production."""
    created = alice.create_service("cli-logs")
    version = alice.upload(created["id"], label_app("logs"), "v1").json()
    assert alice.deploy(created["id"], "production", version["id"])["state"] == "succeeded"
    yield alice.get(f"/api/v1/services/{created['id']}/").json()
    alice.wait_operation(alice.delete(f"/api/v1/services/{created['id']}/").json())


def visit(service) -> str:
    """A request through the service's router, to a path no other request takes."""
    path = f"/visit-{uuid.uuid4().hex[:12]}"
    assert requests.get(service["url"].rstrip("/") + path, timeout=10).status_code == 200
    return path


def access_lines(api, service, **params) -> list[dict]:
    response = api.get(f"/api/v1/services/{service['id']}/logs/", params=params)
    assert response.status_code == 200, response.text
    return [line for line in response.json()["lines"] if line["file"] == "access.log"]


@pytest.mark.integration
def test_a_request_through_the_router_shows_in_the_apis_logs(logged_in, service):
    path = visit(service)
    # The instance writes its access line once it has answered.
    found = wait_until(
        lambda: [line for line in access_lines(logged_in, service) if f"GET {path} " in line["line"]], timeout=10
    )
    assert len(found) == 1
    node = logged_in.get(f"/api/v1/services/{service['id']}/nodes/").json()[0]["name"]
    version = service["environments"][0]["version"]
    assert found[0]["node"] == node and found[0]["instance"] == f"{node}-v{version}"


@pytest.mark.integration
def test_it_prints_the_recent_lines_tagged_by_instance_and_file(cli, logged_in, service):
    path = visit(service)
    wait_until(lambda: any(path in line["line"] for line in access_lines(logged_in, service)), timeout=10)
    result = cli("logs", "cli-logs", "-n", "50")
    assert result.code == 0, result.err
    shown = [line for line in result.out.splitlines() if f"GET {path} " in line]
    assert len(shown) == 1 and shown[0].split()[1] == "access.log:", result.out
    assert shown[0].split()[0].endswith(f"-v{service['environments'][0]['version']}")
    as_json = cli("logs", "cli-logs", "production", "--json").json()
    assert as_json["environment"] == "production" and as_json["errors"] == []


@pytest.mark.integration
def test_it_follows_and_prints_only_new_lines(cli, logged_in, service):
    before = visit(service)
    wait_until(lambda: any(before in line["line"] for line in access_lines(logged_in, service)), timeout=10)
    paths = []
    later = threading.Timer(1.5, lambda: paths.append(visit(service)))
    later.start()
    try:
        result = cli("logs", "cli-logs", "-f", "--follow-seconds", "4")
    finally:
        later.join()
    assert result.code == 0, result.err
    assert result.out.count(f"GET {before} ") == 1, result.out  # printed at first, never again
    assert result.out.count(f"GET {paths[0]} ") == 1, result.out  # the new line, once


@pytest.mark.integration
def test_ctrl_c_stops_following_with_0(cli, logged_in, service, monkeypatch):
    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.time, "sleep", interrupted)
    result = cli("logs", "cli-logs", "--follow")
    assert result.code == 0, result.err


@pytest.mark.integration
def test_it_refuses_an_unknown_environment_or_a_bad_count_in_one_line(cli, logged_in, service):
    result = cli("logs", "cli-logs", "nope")
    expected = "error: cli-logs has no environment named 'nope' (it has: production, development)\n"
    assert result.code == 1 and result.err == expected, result.err
    result = cli("logs", "cli-logs", "-n", "0")
    assert result.code == 1 and "lines" in result.err and len(result.err.splitlines()) == 1, result.err


FAILING_APP = """\
def application(environ, start_response):
    raise RuntimeError("cli-logs has no SECRET_KEY")
"""


@pytest.mark.integration
def test_failed_prints_the_kept_logs_of_the_last_failed_deploy(cli, logged_in, service):
    result = cli("logs", "cli-logs", "development", "--failed")
    assert result.code == 1 and result.err == "error: no failed deploy into cli-logs development left logs\n"

    broken = logged_in.upload(service["id"], zip_archive({"wsgi.py": FAILING_APP}), "broken").json()
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
