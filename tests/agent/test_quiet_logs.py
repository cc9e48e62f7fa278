"""The platform's own requests (health checks, the agent's probes) stay out of the apps' access
logs: nginx and gunicorn do not write them, the agent's reader drops those Tomcat writes."""

import uuid

import pytest

from conpaas_agent import instances
from conpaas_agent.platform_requests import HEALTH_CHECK, PROBE, is_platform_line
from conpaas_agent.router.config import slot_backend
from conpaas_common.waiting import wait_until
from tests.agent.agent_helpers import app_zip, http_request, instance_body, make_zip

TOMCAT_LINES = [
    '10.77.0.1 - - [07/Dec/2026:14:00:00 +0000] "GET / HTTP/1.1" 200 5 3 "curl/8.0"',
    f'10.77.0.2 - - [07/Dec/2026:14:00:01 +0000] "GET / HTTP/1.0" 200 5 2 "{HEALTH_CHECK}"',
    f'10.77.0.2 - - [07/Dec/2026:14:00:02 +0000] "GET / HTTP/1.1" 200 5 2 "{PROBE}"',
    '10.77.0.1 - - [07/Dec/2026:14:00:03 +0000] "GET /conpaas-health-check HTTP/1.1" 200 5 3 "Mozilla/5.0"',
]


def test_the_routers_checks_name_themselves():
    assert f"    http-check send hdr User-Agent {HEALTH_CHECK}" in slot_backend("slot1", "/healthz")


def test_the_reader_drops_the_platforms_lines_of_access_logs_only_and_still_gives_n_lines(tmp_path):
    home = tmp_path / "instances" / "j1"
    home.mkdir(parents=True)
    (home / "access.log").write_text("\n".join(TOMCAT_LINES * 3) + "\n")
    (home / "instance.log").write_text(f'a line about "{HEALTH_CHECK}"\n')
    reader = instances.Instances(str(tmp_path), {}, lambda: None)
    reader.records["j1"] = {"runtime": "java", "pids": [], "port": 1}

    files = reader.logs("j1", 2)

    # The client's two requests (one with a path that looks like a marker), not the checks.
    assert files["access.log"] == [TOMCAT_LINES[0], TOMCAT_LINES[3]]
    assert files["instance.log"] == [f'a line about "{HEALTH_CHECK}"']
    assert [is_platform_line(line) for line in TOMCAT_LINES] == [False, True, True, False]


def requests_of_each_kind(port: int, path: str) -> None:
    """A health check and a probe (straight from the router's or agent's node: no
    X-Forwarded-For) and a client that names itself like them (through a router: with one)."""
    expected = 500 if path == "/raise" else 200
    for user_agent in (HEALTH_CHECK, PROBE):
        answer = http_request(port, "GET", f"{path}?by=platform", headers={"User-Agent": user_agent})
        assert answer.status == expected
    headers = {"User-Agent": HEALTH_CHECK, "X-Forwarded-For": "10.77.0.9"}
    assert http_request(port, "GET", f"{path}?by=client", headers=headers).status == expected


RAISING_APP = """\
def application(environ, start_response):
    if environ["PATH_INFO"] == "/raise":
        raise RuntimeError("broken")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("runtime", "archive", "path"),
    [
        ("python", app_zip(), "/"),
        # gunicorn logs a request its app raised on with an environ of its own, without headers
        ("python", make_zip({"wsgi.py": RAISING_APP}), "/raise"),
        ("static", make_zip({"index.html": "hi\n"}), "/"),
    ],
)
def test_nginx_and_gunicorn_do_not_log_the_platforms_requests(start_agent, archives, runtime, archive, path):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add(f"{uuid.uuid4().hex}.zip", archive)
    started = agent.call("PUT", "/v1/instances/q1", instance_body(url, sha, "v1", runtime=runtime))
    assert started.status == 200, started.body
    requests_of_each_kind(started.json()["port"], path)
    log = agent.home / "instances" / "q1" / "access.log"
    wait_until(lambda: log.exists() and "by=client" in log.read_text(), timeout=10)
    written = log.read_text()
    assert "by=platform" not in written and "conpaas-agent-start-probe" not in written, written
    assert written.count("by=client") == 1
