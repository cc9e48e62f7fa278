"""Autoscaling to a p95 target under an open-loop load that steps from low to 4x one node's capacity and back.

A python service runs an app bound by its workers (`tests.apps.waiting_app`): each request waits
50 ms (as if on a database), so one backend node (gunicorn, 2 sync workers) answers about 40
requests a second. The program measures that capacity first (closed loop, 8 connections, one
node), turns autoscaling on (`PUT /api/v1/services/{id}/autoscaling/`: target p95 `--target-ms`,
1 to `--max-nodes` nodes, cool-down `--cooldown`), then sends an open-loop load
(`tests/load.py`: each request on a new connection at its scheduled time, whatever the answers
before it) at `--low` x capacity for `--low-seconds`, `--high` x capacity for `--high-seconds`,
and `--low` x capacity again for `--after-seconds`.

Printed per 10 s window: the rate sent, requests sent, answered 2xx, answered 503 by the
router's queue timeout, other failures (no answer, other statuses), p50 and p95 latency of the
requests sent in the window (a failed request counts as slower than any answer), the backend
nodes running (polled from the API every 2 s) and the autoscaler's decisions (its events).

Targets (issue 8): p95 back under the target within 60 s of the step up; the node count never
more than one above the fewest that hold the load (ceil(high rate / (0.9 x capacity)));
back to the minimum within cool-down + 60 s of the step down; at most one scale-in per cool-down.

Run: .venv/bin/python bench/autoscale.py [--target-ms 250] [--max-nodes 6] [--cooldown 30]
"""

from __future__ import annotations

import argparse
import http.client
import math
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import percentile, say  # noqa: E402

from conpaas_agent.router.config import BUSY_MESSAGE, QUEUE_TIMEOUT  # noqa: E402
from tests.apps import waiting_app  # noqa: E402
from tests.load import OpenLoop  # noqa: E402

WINDOW = 10.0  # seconds per printed line
HOLD_SHARE = 0.9  # a node holds the target up to this share of its capacity (for "the fewest")


def measure_capacity(url: str, seconds: float = 8.0, connections: int = 8) -> float:
    """Answers a second of one node under a closed loop: `connections` clients, no think time."""
    parts = urlsplit(url)
    done = []
    deadline = time.monotonic() + seconds

    def client():
        count = 0
        while time.monotonic() < deadline:
            connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
            try:
                connection.request("GET", "/")
                if connection.getresponse().status == 200:
                    count += 1
            except OSError:
                pass
            finally:
                connection.close()
        done.append(count)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.monotonic() - started)


# --------------------------------------------------------------------------------------------
# watching the platform


class NodeWatch(threading.Thread):
    """Backend nodes running, polled from the API every 2 s: (monotonic time, count)."""

    def __init__(self, api, service_id: int):
        super().__init__(daemon=True)
        self.api, self.service_id = api, service_id
        self.samples: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def count(self) -> int | None:
        try:
            nodes = self.api.get(f"/api/v1/services/{self.service_id}/nodes/", timeout=10).json()
        except Exception:  # noqa: BLE001 - a missed poll is a gap, not a failure
            return None
        return sum(1 for n in nodes if "backend" in n["roles"] and n["state"] == "running")

    def run(self) -> None:
        while not self.stopping.is_set():
            count = self.count()
            if count is not None:
                self.samples.append((time.monotonic(), count))
            self.stopping.wait(2.0)

    def at(self, moment: float) -> int | None:
        before = [count for at, count in self.samples if at <= moment]
        return before[-1] if before else None


# --------------------------------------------------------------------------------------------
# the run


def run(env, args) -> bool:
    api = env.api
    service = api.create_service("autobench")
    sid, url = service["id"], service["url"]
    benchlib.check_loopback(url)
    benchlib.deploy(api, sid, "production", api.upload(sid, waiting_app(0.05), "waiting").json())
    say(f"service: {url} (one backend node; each request waits 50 ms; gunicorn with 2 sync workers)")

    capacity = measure_capacity(url)
    say(f"capacity of one node (closed loop, 8 connections, 8 s): {capacity:.1f} answers/s (nominal 40)")
    low, high = args.low * capacity, args.high * capacity
    fewest = math.ceil(high / (HOLD_SHARE * capacity))
    policy = {
        "enabled": True,
        "target_p95_ms": args.target_ms,
        "min_nodes": 1,
        "max_nodes": args.max_nodes,
        "cooldown_s": args.cooldown,
    }
    answer = api.put(f"/api/v1/services/{sid}/autoscaling/", json=policy)
    if answer.status_code != 200:
        raise RuntimeError(f"autoscaling answered {answer.status_code}: {answer.text[:300]}")
    say(f"autoscaling: {policy}")
    phases = [(args.low_seconds, low), (args.high_seconds, high), (args.after_seconds, low)]
    say(
        "load (open loop, a new connection per request): "
        + ", ".join(f"{rate:.0f} req/s for {duration:.0f} s" for duration, rate in phases)
    )

    watch = NodeWatch(api, sid)
    watch.start()
    load = OpenLoop(url, low, timeout=QUEUE_TIMEOUT + 10).start()
    start, wall_start = time.monotonic(), time.time()  # wall_start: `start` on the events' clock
    try:
        for duration, rate in phases:
            load.set_rate(rate)
            end = time.monotonic() + duration
            while time.monotonic() < end:
                time.sleep(min(0.2, end - time.monotonic()))
    finally:
        answers = load.stop()
        watch.stopping.set()
        watch.join(timeout=15)

    events = [
        e
        for e in api.get(f"/api/v1/services/{sid}/events/").json()
        if e["action"] == "autoscale" and e["message"].startswith("autoscale:")
    ]
    # (seconds since the load started, message), oldest first
    decisions = [
        (datetime.fromisoformat(e["created"].replace("Z", "+00:00")).timestamp() - wall_start, e["message"])
        for e in reversed(events)
    ]
    # (seconds since the load started, latency in s, status, answered by the router's queue timeout)
    results = [
        (a.sent - start, a.seconds, a.status, a.status == 503 and a.body.strip() == BUSY_MESSAGE.encode())
        for a in answers
    ]
    step_up, step_down = args.low_seconds, args.low_seconds + args.high_seconds
    total = step_down + args.after_seconds
    loads = (low, high, fewest, step_up, step_down, total)
    return report(args, results, watch, decisions, start, loads)


def answered(result) -> bool:
    return result[2] is not None and 200 <= result[2] < 300


def report(args, results, watch, decisions, start, loads) -> bool:
    low, high, fewest, step_up, step_down, total = loads
    target = args.target_ms
    say("")
    heads = " ".join(f"{head:>5}" for head in ("rate", "sent", "2xx", "503q", "other"))
    say(f"{'window':>9} {heads} {'p50 ms':>8} {'p95 ms':>8} {'nodes':>5}  decisions")
    windows = []
    for index in range(math.ceil(total / WINDOW)):
        begin, end = index * WINDOW, (index + 1) * WINDOW
        sent = [r for r in results if begin <= r[0] < end]
        ok = sum(1 for r in sent if answered(r))
        busy = sum(1 for r in sent if r[3])
        # A failed request counts as slower than any answer.
        latencies = [r[1] * 1000 if answered(r) else math.inf for r in sent]
        p50 = percentile(latencies, 50) if latencies else math.nan
        p95 = percentile(latencies, 95) if latencies else math.nan
        nodes = watch.at(start + end)
        rate = high if step_up <= begin < step_down else low
        said = [m.split(": ", 1)[1].split(" (", 1)[0] for at, m in decisions if begin <= at < end]
        windows.append({"begin": begin, "end": end, "p95": p95, "nodes": nodes, "sent": len(sent)})
        say(
            f"{begin:4.0f}-{end:<4.0f} {rate:5.0f} {len(sent):5d} {ok:5d} {busy:5d} {len(sent) - ok - busy:5d} "
            f"{_ms(p50):>8} {_ms(p95):>8} {nodes if nodes is not None else '-':>5}  {'; '.join(said)}"
        )

    failed = sum(1 for r in results if not answered(r))
    busy = sum(1 for r in results if r[3])
    say("")
    say(
        f"requests: {len(results)} sent, {failed} failed ({failed / max(1, len(results)):.1%}), "
        f"{busy} of them answered 503 at the router's queue timeout"
    )
    for at, message in decisions:
        say(f"  t={at:6.1f} s  {message}")

    checks = []
    high_windows = [w for w in windows if step_up <= w["begin"] < step_down]
    recovered = next((w for w in high_windows if w["p95"] <= target), None)
    recovery = recovered["end"] - step_up if recovered else math.inf
    relapses = [w for w in high_windows if recovered and w["begin"] > recovered["begin"] and w["p95"] > target]
    checks.append(
        (
            recovery <= 60,
            f"p95 back under {target} ms {recovery:.0f} s after the step up (target <= 60 s)"
            + (f"; over it again in {len(relapses)} later window(s)" if relapses else ""),
        )
    )
    during = [count for at, count in watch.samples if start + step_up <= at <= start + step_down]
    most = max(during, default=0)
    checks.append(
        (
            most <= fewest + 1,
            f"most backend nodes under {high:.0f} req/s: {most}; the fewest that hold it: {fewest} "
            f"(target <= {fewest + 1})",
        )
    )
    after = [(at - start - step_down, count) for at, count in watch.samples if at >= start + step_down]
    back = next((moment for moment, count in after if count <= 1), math.inf)
    checks.append(
        (
            back <= args.cooldown + 60,
            f"back to 1 node {back:.0f} s after the step down (target <= cool-down + 60 = {args.cooldown + 60} s)",
        )
    )
    scale_ins = [at for at, message in decisions if message.startswith("autoscale: scale in")]
    gaps = [b - a for a, b in zip(scale_ins, scale_ins[1:], strict=False)]
    checks.append(
        (
            all(gap >= args.cooldown for gap in gaps),
            f"scale-ins: {len(scale_ins)}, closest two {min(gaps):.0f} s apart"
            if gaps
            else f"scale-ins: {len(scale_ins)} (target: at most one per {args.cooldown} s cool-down)",
        )
    )
    say("")
    for ok, text in checks:
        say(f"{'ok  ' if ok else 'MISS'} {text}")
    return all(ok for ok, _ in checks)


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "fail" if math.isinf(value) else f"{value:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target-ms", type=int, default=250, help="the p95 target of the policy")
    parser.add_argument("--max-nodes", type=int, default=6)
    parser.add_argument("--cooldown", type=int, default=30)
    parser.add_argument("--low", type=float, default=0.5, help="the low load, times one node's capacity")
    parser.add_argument("--high", type=float, default=4.0, help="the high load, times one node's capacity")
    parser.add_argument("--low-seconds", type=float, default=60.0)
    parser.add_argument("--high-seconds", type=float, default=150.0)
    parser.add_argument("--after-seconds", type=float, default=150.0)
    parser.add_argument("--time-limit", type=float, default=900.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    return benchlib.run_benchmark(
        "autoscale",
        "autoscale",
        run,
        args,
        "p95 under target within 60 s of the step up; nodes <= fewest + 1; minimum within cool-down + 60 s; "
        "<= 1 scale-in per cool-down",
    )


if __name__ == "__main__":
    sys.exit(main())
