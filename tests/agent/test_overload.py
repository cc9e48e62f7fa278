"""Overload at the router: each server takes as many requests at once as its instance serves,
the rest wait in HAProxy's queue (503 and counted past the queue timeout), health checks keep
passing, and a new server takes no request before its first check passes.

Real agent, real HAProxy, real gunicorn (sync workers: one request each)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conpaas_agent.router.config import BUSY_MESSAGE, QUEUE_TIMEOUT
from conpaas_agent.runtimes.python import WORKERS
from conpaas_common.waiting import wait_until
from tests.agent.agent_helpers import instance_body, make_zip, runtime
from tests.load import OpenLoop, tally

pytestmark = pytest.mark.integration

# Every request waits ?s= seconds (50 ms by default: as if on a database); /busy is the app's own
# 503; /health fails while the file SICK_FLAG names exists.
OVERLOAD_APP = """\
import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    status = "200 OK"
    if path == "/health" and os.path.exists(os.environ["SICK_FLAG"]):
        status = "500 Internal Server Error"
    elif path == "/busy":
        status = "503 Service Unavailable"
    time.sleep(float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.05"])[0]))
    body = (os.environ["CONPAAS_VERSION"] + "\\n").encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def start_instance(agent, archives, name, sick_flag):
    url, sha = archives.add("overload.zip", make_zip({"wsgi.py": OVERLOAD_APP}))
    body = instance_body(url, sha, "v1", version="1", env={"SICK_FLAG": str(sick_flag)})
    resp = agent.call("PUT", f"/v1/instances/{name}", body)
    assert resp.status == 200, resp.body
    return resp.json()


def routing(instances, maxconn=None):
    """Production on version 1, served by `instances` (name -> the agent's answer); each server's
    limit is the concurrency its instance reports, unless `maxconn` says otherwise."""
    servers = [
        {"name": name, "address": "127.0.0.1", "port": i["port"], "maxconn": maxconn or i["concurrency"]}
        for name, i in instances.items()
    ]
    return {"health_path": "/health", "backends": {"1": servers}, "routes": {"production": "1"}, "drain_timeout": 5}


def apply(agent, desired):
    resp = agent.call("PUT", "/v1/proxy", desired)
    assert resp.status == 200, resp.body
    return resp.json()


def server(agent, name):
    return runtime(agent).servers()[("slot0", name)]


def backend(agent):
    return next(r for r in runtime(agent).show_stat() if (r["pxname"], r["svname"]) == ("slot0", "BACKEND"))


def production_metrics(agent):
    return agent.call("GET", "/v1/proxy/metrics?window=60").json()["environments"]["production"]


def test_excess_requests_wait_in_the_routers_queue_not_in_the_instance(start_agent, archives, tmp_path):
    agent = start_agent()
    instance = start_instance(agent, archives, "i-a", tmp_path / "sick")
    assert instance["concurrency"] == WORKERS == 2
    apply(agent, routing({"i-a": instance}))
    assert server(agent, "i-a")["slim"] == "2"

    # Six requests of 1 s at once: two in the instance, the others wait in the router's queue.
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: agent.web("/?s=1"), range(6)))
    elapsed = time.monotonic() - started

    assert [a.status for a in answers] == [200] * 6
    assert 2.9 < elapsed < QUEUE_TIMEOUT, "three rounds of two"
    assert server(agent, "i-a")["smax"] == "2", "never more than its workers inside the instance"
    assert int(backend(agent)["qmax"]) >= 3

    # The limit follows what the routing says, in place; a reload keeps it.
    worker = runtime(agent).worker_pid()
    apply(agent, routing({"i-a": instance}, maxconn=3))
    assert server(agent, "i-a")["slim"] == "3" and runtime(agent).worker_pid() == worker
    assert agent.call("POST", "/v1/proxy/reload").status == 200
    assert runtime(agent).worker_pid() != worker and server(agent, "i-a")["slim"] == "3"


def test_a_request_that_waits_past_the_queue_timeout_is_answered_503_and_counted(start_agent, archives, tmp_path):
    agent = start_agent()
    sick = tmp_path / "sick"
    instance = start_instance(agent, archives, "i-a", sick)
    apply(agent, routing({"i-a": instance}))

    with ThreadPoolExecutor(5) as pool:
        # Both workers busy for longer than the queue timeout (shorter than a check's timeout
        # after it, so the server stays up)...
        holding = [pool.submit(agent.web, f"/?s={QUEUE_TIMEOUT + 1}") for _ in range(2)]
        wait_until(lambda: server(agent, "i-a")["scur"] == "2", message="both workers to be busy")
        # ... so these wait in the queue until it times out.
        started = time.monotonic()
        waiting = [pool.submit(agent.web, "/") for _ in range(3)]
        refused = [future.result() for future in waiting]
        waited = time.monotonic() - started
        held = [future.result() for future in holding]

    assert [a.status for a in held] == [200, 200]
    assert [a.status for a in refused] == [503] * 3
    assert QUEUE_TIMEOUT - 0.5 < waited < QUEUE_TIMEOUT + 2
    assert refused[0].body.decode().strip() == BUSY_MESSAGE
    assert refused[0].header("Retry-After") == "1" and refused[0].header("Content-Type") == "text/plain"
    # The app's own 503 passes as it is, and is not a queue timeout.
    own = agent.web("/busy")
    assert own.status == 503 and own.body == b"v1\n"

    figures = wait_until(lambda: (f := production_metrics(agent))["requests"] == 6 and f, message="six requests")
    assert figures["queue_timeouts"] == 3
    assert figures["error_rate"] == round(4 / 6, 4), "the queue timeouts and the app's 503"

    # No server up: the same 503, which is not a queue timeout.
    sick.touch()
    wait_until(lambda: server(agent, "i-a")["status"] == "DOWN", message="the server to go down")
    down = agent.web("/")
    assert down.status == 503 and down.body.decode().strip() == BUSY_MESSAGE
    final = wait_until(lambda: (f := production_metrics(agent))["requests"] == 7 and f, message="the 7th request")
    assert final["queue_timeouts"] == 3


def test_a_new_server_takes_no_request_before_its_first_check_passes(start_agent, archives, tmp_path):
    agent = start_agent()
    a = start_instance(agent, archives, "i-a", tmp_path / "a-sick")
    b_sick = tmp_path / "b-sick"
    b_sick.touch()
    b = start_instance(agent, archives, "i-b", b_sick)
    apply(agent, routing({"i-a": a}))

    load = OpenLoop(f"http://127.0.0.1:{agent.http_port}/", rate=20).start()
    try:
        wait_until(lambda: len(load.snapshot()) >= 5, message="requests before i-b is added")
        apply(agent, routing({"i-a": a, "i-b": b}))
        added = len(load.snapshot())

        def failed_and_loaded() -> bool:  # its check failed, and 1.5 s of requests went by
            checked = server(agent, "i-b")["check_status"].removeprefix("* ") == "L7STS"
            return checked and len(load.snapshot()) >= added + 30

        wait_until(failed_and_loaded, message="i-b's check to fail under load")
        row = server(agent, "i-b")
        assert (row["status"], row["stot"]) == ("DOWN", "0"), "not one request before a check passed"
        assert int(server(agent, "i-a")["stot"]) > 10

        b_sick.unlink()
        wait_until(lambda: server(agent, "i-b")["status"] == "UP", message="i-b to pass its check")
        wait_until(lambda: int(server(agent, "i-b")["stot"]) > 0, message="i-b to take requests")
    finally:
        answers = load.stop()
    assert tally(answers) == {200: len(answers)}


def test_health_checks_keep_passing_at_four_times_an_instances_capacity(start_agent, archives, tmp_path):
    agent = start_agent()
    instance = start_instance(agent, archives, "i-a", tmp_path / "sick")
    apply(agent, routing({"i-a": instance}))
    capacity = instance["concurrency"] / 0.05  # requests a second: each waits 50 ms
    api = runtime(agent)
    downs = api.servers()[("slot0", "i-a")]["chkdown"]  # 1: down when added, until its first check

    durations, samples = [], []
    load = OpenLoop(f"http://127.0.0.1:{agent.http_port}/", rate=4 * capacity, timeout=QUEUE_TIMEOUT + 5).start()
    try:
        deadline = time.monotonic() + QUEUE_TIMEOUT + 2  # into the queue timeouts
        while time.monotonic() < deadline:
            row = api.servers()[("slot0", "i-a")]
            samples.append((row["status"], row["check_status"].removeprefix("* ")))
            if row["check_duration"].isdigit():
                durations.append(int(row["check_duration"]))
            time.sleep(0.1)
    finally:
        answers = load.stop()
    row = api.servers()[("slot0", "i-a")]
    queued = int(backend(agent)["qmax"])
    print(
        f"\n{len(answers)} requests at {4 * capacity:.0f}/s: {dict(tally(answers))}; queue up to {queued}; "
        f"check durations {min(durations)}-{max(durations)} ms over {row['chkfail']} failed checks"
    )
    assert queued > 100, "the load did overflow the instance"
    assert set(samples) == {("UP", "L7OK")}
    assert row["chkfail"] == "0" and row["chkdown"] == downs
    assert max(durations) < 1000, "a check waits behind at most the requests in the instance"
    assert set(tally(answers)) <= {200, 503}
