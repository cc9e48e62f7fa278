"""Deploy latency: from the PATCH of a new code version into development until its preview
answers with the new label.

A python service has a version in production. Each round uploads a small app without
dependencies (a unique build, so a new archive is staged each time), then times
`PATCH /api/v1/services/{id}/environments/development/ {version}` until a request to the
production URL with header `X-Conpaas-Env: <development preview key>` answers the new label
(polled every 20 ms on new connections). The upload is not timed. Each deploy replaces the
previous development version; the next round starts once the deploy operation has finished.
Target: median <= 3 s.

Run: .venv/bin/python bench/deploy_latency.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="deploys timed (minimum 7)")
    parser.add_argument("--poll", type=float, default=0.02, help="seconds between preview polls")
    parser.add_argument(
        "--deploy-timeout", type=float, default=60.0, help="give up on one deploy after this many seconds"
    )
    parser.add_argument("--target-median", type=float, default=3.0, help="seconds")
    parser.add_argument("--time-limit", type=float, default=300.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()

    return benchlib.run_benchmark(
        "deploy latency", "deploy", run, args, f"median <= {args.target_median:.1f} s over >= 7 deploys"
    )


def run(env, args) -> bool:
    api = env.api
    service, _ = benchlib.serving(api, "deploybench", {"production": (f"deploy-prod-{uuid.uuid4().hex}", "prod")})
    sid, url = service["id"], service["url"]
    key = benchlib.environments(api, sid)["development"]["preview_key"]
    assert benchlib.get_text(url) == (200, "prod\n"), benchlib.get_text(url)
    headers = {"X-Conpaas-Env": key}
    say(f"service {sid}: production 'prod', url {url}; preview by header X-Conpaas-Env")

    times: list[float] = []
    failures: list[str] = []
    run_id = uuid.uuid4().hex[:8]
    for round_ in range(1, args.rounds + 1):
        label = f"d{round_}"
        version = benchlib.upload(api, sid, f"deploy-{run_id}-{round_}", label)
        expected = f"{label}\n"
        seen: Counter = Counter()
        started = time.monotonic()
        response = api.patch(f"/api/v1/services/{sid}/environments/development/", json={"version": version["id"]})
        patch_rtt = time.monotonic() - started
        if response.status_code != 202:
            failures.append(f"deploy {round_}: PATCH answered {response.status_code}: {response.text[:200]}")
            say(f"deploy {round_}: {label}: PATCH answered {response.status_code}: {response.text[:200]}")
            break
        operation = response.json()
        deadline = started + args.deploy_timeout
        answered = None
        while time.monotonic() < deadline:
            try:
                status, body = benchlib.get_text(url, headers, timeout=5)
                seen[body.strip()[:20] if status == 200 else f"HTTP {status}"] += 1
                if status == 200 and body == expected:
                    answered = time.monotonic() - started
                    break
            except OSError as exc:
                seen[type(exc).__name__] += 1
            time.sleep(args.poll)
        finished = api.wait_operation(operation, timeout=max(5.0, deadline - time.monotonic() + 30))
        op_time = time.monotonic() - started
        meanwhile = ", ".join(f"{k}×{v}" for k, v in seen.items())
        if answered is None:
            failures.append(f"deploy {round_}: the preview never answered {label} within {args.deploy_timeout:.0f} s")
            say(
                f"deploy {round_}: {label}: preview did NOT answer within {args.deploy_timeout:.0f} s"
                f" (operation {finished['state']}: {finished.get('error')}; answers seen: {meanwhile})"
            )
            break
        times.append(answered)
        say(
            f"deploy {round_}: {label}: preview answered {label} after {answered:.3f} s"
            f"  (PATCH round trip {patch_rtt * 1000:.0f} ms; operation {finished['state']} by {op_time:.2f} s;"
            f" preview answers while waiting: {meanwhile})"
        )
        if finished["state"] != "succeeded":
            failures.append(f"deploy {round_}: operation {finished['state']}: {finished.get('error')}")
            break

    if times:
        median = statistics.median(times)
        say(
            f"deploy latency over {len(times)} deploys: median={median:.3f} s  max={max(times):.3f} s"
            f"  min={min(times):.3f} s  all=[{', '.join(f'{t:.3f}' for t in times)}]"
        )
    else:
        median = float("inf")
        say("deploy latency: no deploy completed")
    for line in failures:
        say(f"  failure: {line}")
    return not failures and len(times) >= max(7, args.rounds) and median <= args.target_median


if __name__ == "__main__":
    sys.exit(main())
