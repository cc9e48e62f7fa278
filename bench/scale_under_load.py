"""Scale under load: a steady open-loop load while the backend scales 1 -> 4 -> 1 nodes.

A python service whose every request waits `--request-ms` (50 ms, as if on a database: one node,
2 gunicorn workers, serves about 40 requests a second). An open-loop load (`tests/load.py`: a
request every 1/`--rate` s on a new connection, whatever the answers take) runs for the whole
run; meanwhile the backend is scaled to `--nodes` (4) and back to 1 through the API
(`POST /api/v1/services/{id}/scale/`), `--hold` seconds of steady load before, between and after.
`--fail-rate` sets CONPAAS_LOCAL_FAIL_RATE for the control plane (that share of the local cloud's
node creations fail, and are retried; a platform without it ignores the variable).

Counted:
- requests, and failures: no HTTP answer, or any answer but 200 (the router's 503 at its queue
  timeout told apart), per phase (sent while 1 node, scaling out, N nodes, scaling in, 1 node);
- retries: node creations tried again (the service's events `node.boot` "… trying again");
- whether each scale operation succeeded, and how long it took;
- the queue timeouts the routers counted (the API's metrics), against the 503s the load saw.
Target: every scale operation succeeds, 0 failed requests (at the default rate, below one node's
capacity; `--rate 150` shows an overload: the queue timeouts are the failures then).

Run: .venv/bin/python bench/scale_under_load.py [--rate 30] [--nodes 4] [--hold 8] [--fail-rate 0.2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import ms, percentile, say  # noqa: E402

from conpaas_agent.router.config import BUSY_MESSAGE, QUEUE_TIMEOUT  # noqa: E402
from conpaas_agent.runtimes.python import WORKERS  # noqa: E402
from tests.apps import waiting_app  # noqa: E402
from tests.load import OpenLoop  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=30.0, help="requests a second, open loop")
    parser.add_argument("--request-ms", type=float, default=50.0, help="how long each request waits in the app")
    parser.add_argument("--nodes", type=int, default=4, help="backend nodes to scale out to")
    parser.add_argument("--hold", type=float, default=8.0, help="seconds of steady load at each size")
    parser.add_argument(
        "--fail-rate", type=float, default=0.2, help="CONPAAS_LOCAL_FAIL_RATE for the control plane (0 to 1)"
    )
    parser.add_argument("--scale-timeout", type=float, default=180.0, help="give up on one scale after this long")
    parser.add_argument("--time-limit", type=float, default=480.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    if not 0 <= args.fail_rate <= 1:
        parser.error("--fail-rate must be between 0 and 1")
    return benchlib.run_benchmark(
        "scale under load",
        "scale",
        run,
        args,
        "every scale operation succeeds, 0 failed requests",
        settings={"CONPAAS_LOCAL_FAIL_RATE": str(args.fail_rate)},
    )


def scale(api, sid: int, nodes: int, timeout: float) -> dict:
    """Scale the backend; the operation as it ended, with `seconds`."""
    began = time.monotonic()
    response = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": nodes})
    if response.status_code != 202:
        return {"state": f"refused (HTTP {response.status_code})", "error": response.text[:300], "seconds": 0.0}
    operation = api.wait_operation(response.json(), timeout=timeout)
    return {**operation, "seconds": time.monotonic() - began}


def hold(seconds: float) -> float:
    """Steady load for `seconds` (the load runs in its own thread); returns when it ends."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.2, end - time.monotonic()))
    return end


def run(env, args) -> bool:
    api = env.api
    service = api.create_service("scalebench")
    sid, url = service["id"], service["url"]
    benchlib.check_loopback(url)
    version = api.upload(sid, waiting_app(args.request_ms / 1000), "v1").json()
    benchlib.deploy(api, sid, "production", version)
    capacity = WORKERS / (args.request_ms / 1000)
    say(
        f"service {sid} at {url}: every request waits {args.request_ms:.0f} ms, {WORKERS} workers a node "
        f"(about {capacity:.0f} requests/s a node); load {args.rate:.0f}/s open loop, a new connection each"
    )

    load = OpenLoop(url, args.rate, timeout=QUEUE_TIMEOUT + 10).start()
    began = time.monotonic()
    phases = [("1 node", began)]
    operations = []
    try:
        hold(args.hold)
        phases.append((f"scaling 1 -> {args.nodes}", time.monotonic()))
        operations.append((f"1 -> {args.nodes}", scale(api, sid, args.nodes, args.scale_timeout)))
        phases.append((f"{args.nodes} nodes", time.monotonic()))
        hold(args.hold)
        phases.append((f"scaling {args.nodes} -> 1", time.monotonic()))
        operations.append((f"{args.nodes} -> 1", scale(api, sid, 1, args.scale_timeout)))
        phases.append(("1 node", time.monotonic()))
        hold(args.hold)
    finally:
        stopped = time.monotonic()
        answers = load.stop()
    phases.append(("end", stopped))

    for name, operation in operations:
        error = f": {operation.get('error')}" if operation["state"] != "succeeded" else ""
        say(f"scale {name}: {operation['state']} in {operation['seconds']:.1f} s{error}")

    def busy(answer) -> bool:
        return answer.status == 503 and answer.body.decode(errors="replace").strip() == BUSY_MESSAGE

    say(f"{'phase':<16}{'seconds':>8}{'requests':>10}{'failed':>8}{'503 busy':>10}{'p50':>11}{'p95':>11}")
    for (name, start), (_, end) in zip(phases, phases[1:], strict=False):
        sent = [a for a in answers if start <= a.sent < end]
        failed = [a for a in sent if a.status != 200]
        times = [a.seconds for a in sent if a.status == 200]
        p50, p95 = (ms(percentile(times, 50)), ms(percentile(times, 95))) if times else ("-", "-")
        say(
            f"{name:<16}{end - start:>8.1f}{len(sent):>10}{len(failed):>8}"
            f"{sum(busy(a) for a in failed):>10}{p50:>11}{p95:>11}"
        )

    failed = [a for a in answers if a.status != 200]
    queue_timeouts = sum(busy(a) for a in failed)
    others = {}
    for answer in failed:
        if not busy(answer):
            why = answer.error or f"HTTP {answer.status}"
            others[why] = others.get(why, 0) + 1
    window = int(time.monotonic() - began) + 10
    metrics = api.get(f"/api/v1/services/{sid}/metrics/?window={window}").json()["environments"]["production"]
    events = api.get(f"/api/v1/services/{sid}/events/").json()
    retries = [e for e in events if e["action"] == "node.boot" and "trying again" in e["message"]]
    say(f"requests: {len(answers)} in {stopped - began:.1f} s ({len(answers) / (stopped - began):.1f}/s)")
    say(
        f"failures: {len(failed)} ({queue_timeouts} answered 503 at the router's {QUEUE_TIMEOUT} s queue timeout, "
        f"other: {others or 0}); queue timeouts the routers counted: {metrics.get('queue_timeouts', 'not reported')}"
    )
    say(f"retries: {len(retries)} node creation(s) tried again")
    for event in reversed(retries):
        say(f"  {event['created']}  {event['message'][:160]}")
    return not failed and all(operation["state"] == "succeeded" for _, operation in operations)


if __name__ == "__main__":
    sys.exit(main())
