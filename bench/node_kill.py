"""Node kill: no failed idempotent request while a backend node is killed and replaced.

A python service runs v1 in production on two backend nodes: the node that also routes, and a
backend-only one. Client threads send `GET /` to the production URL for the whole run — half
keep one keep-alive connection, half open a new connection per request (swap_under_load's
client: a keep-alive request whose reused connection was closed before any response byte is
retried once, as every HTTP client does, and counted apart). After `--before` seconds every
process of the backend-only node gets `kill -9` (by pid: the node's cgroups and user when
isolated, else its process group). The router's health checks take it out of rotation and
retry what it dropped on the other server; the platform's self-healing notices the dead node
and replaces it. The load goes on `--after` seconds past the end of the heal.

Printed: requests, failed requests (any error or answer other than 200 "v1"), retries, and the
seconds from the kill until the heal was noticed (its operation's event), until the replacement
node ran, and until the heal ended (instances healthy, routers told), with the heal's own events.
Target: 0 failed requests, the node replaced.

Run: .venv/bin/python bench/node_kill.py [--clients 4] [--before 5] [--after 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402
from swap_under_load import Client  # noqa: E402

from conpaas_common.waiting import wait_until  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="client threads, half keep-alive")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of load after the heal ended")
    parser.add_argument("--client-nice", type=int, default=10, help="nice value of the client threads")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--heal-timeout", type=float, default=120.0, help="seconds the heal may take")
    parser.add_argument("--time-limit", type=float, default=300.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    return benchlib.run_benchmark("node kill", "nodekill", run, args, "0 failed requests, the node replaced")


def run(env, args) -> bool:
    api = env.api
    service, _ = benchlib.serving(api, "nodekill", {"production": ("kill-v1", "v1")})
    sid, url = service["id"], service["url"]
    scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 2})
    if api.wait_operation(scale.json(), timeout=120)["state"] != "succeeded":
        raise RuntimeError(f"scaling to 2 backend nodes failed: {scale.json()}")
    victim = next(node["name"] for node in nodes(api, sid) if node["role"] == "backend")
    say(f"service: {url}  nodes: {', '.join(n['name'] + ' (' + n['role'] + ')' for n in nodes(api, sid))}")

    parts = urlsplit(url)
    clients = [
        Client(i, i % 2 == 0, parts.hostname, parts.port or 80, float("inf"), args.request_timeout)
        for i in range(args.clients)
    ]
    if args.client_nice:
        os.nice(args.client_nice)  # the clients (threads inherit it) yield the CPU to the platform
    start = time.monotonic()
    for client in clients:
        client.start()
    try:
        time.sleep(args.before)  # steady load before the kill
        killed_at, killed_wall = time.monotonic(), time.time()
        killed = env.plane.kill_node(victim)
        say(f"kill -9: {killed} processes of {victim} at t={killed_at - start:.1f}s")

        def replacement():
            backends = [n for n in nodes(api, sid) if n["role"] == "backend"]
            return next((n for n in backends if n["name"] != victim and n["state"] == "running"), None)

        new = wait_until(replacement, timeout=args.heal_timeout, interval=0.2, message=f"{victim} to be replaced")
        running_after = time.monotonic() - killed_at
        summary = wait_until(
            lambda: next((e for e in events(api, sid) if e["message"].startswith("healed in ")), None),
            timeout=args.heal_timeout,
            interval=0.2,
            message="the heal to end",
        )
        healed_after = time.monotonic() - killed_at
        time.sleep(args.after)  # steady load after the heal
    finally:
        for client in clients:
            client.stop_at = time.monotonic()
        for client in clients:
            client.join(args.request_timeout + 5)
    elapsed = time.monotonic() - start

    heal_events = [e for e in reversed(events(api, sid)) if e["operation"] == summary["operation"]]
    noticed = next(e for e in heal_events if e["message"].startswith("healing: "))
    noticed_after = datetime.fromisoformat(noticed["created"]).timestamp() - killed_wall

    results = [(r, client.keepalive) for client in clients for r in client.results]
    failures = Counter(failure.split(":")[0] for (_, _, _, failure, _), _ in results if failure)
    examples = [
        f"  failed: t={sent - killed_at:+.3f}s from the kill, {'keep-alive' if ka else 'new-conn'}: {failure}"
        for (sent, _, _, failure, _), ka in results
        if failure
    ][:10]
    retries = sum(client.retries for client in clients)
    total = len(results)
    say(f"load: {args.clients} clients (half keep-alive), {elapsed:.1f} s, client threads at nice +{args.client_nice}")
    say(f"requests: total={total} ({total / elapsed:.0f} req/s)")
    say(f"failed requests: {sum(failures.values())}" + (f"  {dict(failures)}" if failures else ""))
    say(f"keep-alive retries (reused connection closed before any response byte, retried once): {retries}")
    say(f"replaced {victim} by {new['name']}")
    say(
        f"seconds from the kill: noticed {noticed_after:.1f}, replacement running {running_after:.1f},"
        f" healed (instances healthy, routers told) {healed_after:.1f}"
    )
    say("heal events:")
    for event in heal_events:
        say(f"  {event['created'][11:23]} [{event['outcome']}] {event['message'][:220]}")
    for line in examples:
        say(line)
    return not failures and total > 0


def nodes(api, service_id: int) -> list[dict]:
    return api.get(f"/api/v1/services/{service_id}/nodes/").json()


def events(api, service_id: int) -> list[dict]:
    return api.get(f"/api/v1/services/{service_id}/events/").json()


if __name__ == "__main__":
    sys.exit(main())
