"""Router overhead: throughput and latency through the service's HAProxy router versus straight
to the gunicorn instance behind it.

A python service runs one small app in production. The same closed-loop load (8 keep-alive
connections, no think time, 10 s per phase) is sent to the production URL (through HAProxy)
and to the instance's own port (found through the backend node's agent, signed
`GET /v1/status`). Phases alternate — direct, router, direct, router — to cancel drift; the
figures are the means over the phases of each kind. The load generator is `wrk` when it is
installed (a Python client may itself be the bottleneck), else a threaded Python client; the
output says which. Target: router throughput >= 0.9 x direct.

Run: .venv/bin/python bench/router_overhead.py [--duration 10] [--connections 8] [--rounds 2] [--python]
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import percentile, say  # noqa: E402

UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unknown wrk duration {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def wrk_phase(url: str, duration: float, connections: int, threads: int) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:.0f}s", "--timeout", "10s", "--latency", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
    out = done.stdout
    if done.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or out.strip()}")
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    distribution = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M))
    result["p50"], result["p99"] = seconds(distribution["50"]), seconds(distribution["99"])
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sockets.group(0) if sockets else ""
    if sockets:
        errors += sum(int(x) for x in sockets.groups())
    result["errors"] = errors
    return result


def python_phase(url: str, duration: float, connections: int, expected: bytes) -> dict:
    parts = urlsplit(url)
    stop_at = time.monotonic() + duration
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def client(i: int) -> None:
        connection = None
        while time.monotonic() < stop_at:
            if connection is None:
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            began = time.monotonic()
            try:
                connection.request("GET", parts.path or "/")
                response = connection.getresponse()
                body = response.read()
                if response.will_close:
                    connection.close()
                    connection = None
                if response.status != 200 or body != expected:
                    errors[i] += 1
                    continue
                latencies[i].append(time.monotonic() - began)
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + 15)
    elapsed = time.monotonic() - started
    everything = [x for per in latencies for x in per]
    return {
        "rps": len(everything) / elapsed,
        "requests": len(everything),
        "p50": percentile(everything, 50) if everything else float("nan"),
        "p99": percentile(everything, 99) if everything else float("nan"),
        "errors": sum(errors),
        "socket_errors": "",
    }


def instance_url(env, service: dict, version: dict) -> str:
    for config in env.backend_nodes(service):
        status, payload = benchlib.agent_call(config, "GET", "/v1/status")
        if status != 200:
            raise RuntimeError(f"GET /v1/status on {config['name']} answered {status}: {payload}")
        for instance in (payload.get("instances") or {}).values():
            if str(instance.get("version")) == str(version["id"]) or instance.get("label") == version["label"]:
                host = config["agent_bind"].rsplit(":", 1)[0]
                return f"http://{host}:{instance['port']}/"
    raise RuntimeError("no running instance of the production version found through the agents")


def cpu_meter(env) -> benchlib.CpuMeter:
    """CPU per component: the node's HAProxy, gunicorn instance and agent (the node's process
    group), the load generator, the control plane (its process group), everything else."""
    groups = set()
    for path in (env.home / "nodes").glob("*/agent.pid"):
        try:
            groups.add(os.getpgid(int(path.read_text().strip())))
        except (OSError, ValueError):
            continue
    plane = os.getpgid(env.plane.process.pid) if env.plane.process else -1
    return benchlib.CpuMeter(
        {
            "haproxy": lambda g, c: g in groups and "haproxy" in c,
            "gunicorn": lambda g, c: g in groups and "gunicorn" in c,
            "agent": lambda g, c: g in groups and "conpaas_agent" in c,
            "load generator": lambda g, c: False,  # measured from this process's own and children's times
            "control plane": lambda g, c: g == plane,
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (closed loop)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=2, help="direct+router pairs, alternating")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load on each target first")
    parser.add_argument("--python", action="store_true", help="use the Python client even when wrk is installed")
    parser.add_argument("--target-ratio", type=float, default=0.9)
    parser.add_argument("--time-limit", type=float, default=240.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()

    return benchlib.run_benchmark(
        "router overhead", "router", run, args, f"router throughput >= {args.target_ratio:.2f} x direct"
    )


def run(env, args) -> bool:
    api = env.api
    service = api.create_service("routerbench")
    sid = service["id"]
    version = benchlib.upload(api, sid, "router-v1", "v1")
    benchlib.deploy(api, sid, "production", version)
    service = api.get(f"/api/v1/services/{sid}/").json()
    router = service["url"]
    direct = instance_url(env, service, version)
    for url in (router, direct):
        benchlib.check_loopback(url)
        answer = benchlib.get_text(url)
        assert answer == (200, "v1\n"), f"{url} answered {answer}"

    wrk = shutil.which("wrk") if not args.python else None
    if wrk:
        version_line = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        say(
            f"load generator: wrk ({(version_line or ['?'])[0].strip()}), {args.threads} threads,"
            f" {args.connections} keep-alive connections, closed loop, {args.duration:.0f} s per phase"
        )

        def phase(url: str, duration: float) -> dict:
            return wrk_phase(url, duration, args.connections, args.threads)
    else:
        say(
            "load generator: Python http.client threads"
            f" (wrk {'not used: --python' if args.python else 'not installed'}),"
            f" {args.connections} keep-alive connections, closed loop, {args.duration:.0f} s per phase"
        )

        def phase(url: str, duration: float) -> dict:
            return python_phase(url, duration, args.connections, b"v1\n")

    say(f"router: {router}   direct: {direct}")
    if args.warmup > 0:
        for url in (direct, router):
            phase(url, max(1.0, args.warmup))

    meter = cpu_meter(env)
    results: dict[str, list[dict]] = {"direct": [], "router": []}
    for round_ in range(1, args.rounds + 1):
        for name, url in (("direct", direct), ("router", router)):
            meter.start()
            result = phase(url, args.duration)
            result["cpu"] = meter.stop()
            results[name].append(result)
            say(
                f"round {round_} {name:6}: {result['rps']:9.1f} req/s  p50={result['p50'] * 1000:.2f} ms"
                f"  p99={result['p99'] * 1000:.2f} ms  requests={result['requests']}  errors={result['errors']}"
                + (f"  ({result['socket_errors']})" if result["socket_errors"] else "")
            )
            say(f"round {round_} {name:6}  cpu: {benchlib.cpu_line(result['cpu'])}")

    means = {}
    for name, runs in results.items():
        means[name] = {key: statistics.mean(r[key] for r in runs) for key in ("rps", "p50", "p99")}
        say(
            f"{name} (mean of {len(runs)}): throughput={means[name]['rps']:.1f} req/s"
            f"  p50={means[name]['p50'] * 1000:.2f} ms  p99={means[name]['p99'] * 1000:.2f} ms"
        )
        cpu = {key: statistics.mean(r["cpu"][key] for r in runs) for key in runs[0]["cpu"]}
        say(f"{name} (mean of {len(runs)}) cpu: {benchlib.cpu_line(cpu)}")
        per_request = {
            key: statistics.mean(r["cpu"][key] / 100 * args.duration / max(1, r["requests"]) for r in runs) * 1e6
            for key in ("haproxy", "gunicorn", "agent", "load generator")
        }
        say(
            f"{name} (mean of {len(runs)}) cpu per request: "
            + "  ".join(f"{key}={value:.0f} us" for key, value in per_request.items())
        )
    ratio = means["router"]["rps"] / means["direct"]["rps"] if means["direct"]["rps"] else 0.0
    say(
        f"ratio router/direct throughput: {ratio:.3f}   added p50 latency: "
        f"{(means['router']['p50'] - means['direct']['p50']) * 1000:+.2f} ms"
    )
    errors = sum(r["errors"] for runs in results.values() for r in runs)
    if errors:
        say(f"errors during the measured phases: {errors}")
    return ratio >= args.target_ratio and errors == 0


if __name__ == "__main__":
    sys.exit(main())
