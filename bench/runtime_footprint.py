"""Runtime footprint: the memory and the start-to-healthy time of one instance of each runtime.

One node agent (backend role, in its own process group, as the local cloud runs it; not
isolated, so its instances run as this user on 127.0.0.1) is given, one runtime at a time, one
instance of that runtime's example (examples/<runtime>, packed as `conpaas push` packs it;
java's hello.war as it is), served to it by a small archive server on 127.0.0.1:
- start-to-healthy: from the signed `PUT /v1/instances/{name}` until a `GET /` of the instance
  answers below 500 (the health rule); the PUT itself answers once the instance serves. The
  first round stages the version (download, unpack; nothing to build: no requirements.txt);
  later rounds start it again after a `DELETE` (staged anew: a version no instance uses is
  removed). The median over the rounds is shown, with the first round's.
- memory: once it has answered 5 requests, the RSS summed over every process of the instance
  (the processes its agent records, and their descendants: gunicorn's workers, php-fpm's keeper
  and pool, nginx's worker, the JVM), and their PSS (shared pages divided among the processes
  sharing them: the fairer sum), from /proc.
Target: each runtime healthy within its start timeout (30 s; Tomcat 120 s) in every round.

Run: .venv/bin/python bench/runtime_footprint.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

from conpaas_cli.packing import open_code  # noqa: E402
from conpaas_common.procs import children  # noqa: E402
from conpaas_common.waiting import wait_until  # noqa: E402
from tests.agent.agent_helpers import AgentProcess, ArchiveServer  # noqa: E402

EXAMPLES = benchlib.ROOT / "examples"
RUNTIMES = {
    "python": {"entry_point": "wsgi:application"},
    "php": {"max_upload_mb": 64},
    "static": {},
    "java": {"heap_mb": 256},
}
START_TIMEOUT = {"python": 30, "php": 30, "static": 30, "java": 120}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="starts timed per runtime")
    parser.add_argument("--time-limit", type=float, default=600.0, help="hard limit of the whole run, seconds")
    args = parser.parse_args()
    title = "runtime footprint"
    target = "every runtime healthy within its start timeout (30 s; java 120 s) in every round"
    say(f"== {title} ==")
    benchlib.print_machine()
    verdict = False
    with tempfile.TemporaryDirectory(prefix="conpaas-footprint-") as home:
        archives = ArchiveServer(Path(home))
        agent = AgentProcess(Path(home) / "node", ["backend"])
        try:
            with benchlib.time_limit(args.time_limit):
                agent.start()
                verdict = run(agent, archives, args)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
            say(f"error: {type(exc).__name__}: {exc}")
        finally:
            agent.destroy()
            archives.close()
    say(f"{'PASS' if verdict else 'FAIL'}: {title} (target: {target})")
    return 0 if verdict else 1


def run(agent: AgentProcess, archives: ArchiveServer, args) -> bool:
    rows, ok = [], True
    for runtime, fields in RUNTIMES.items():
        with open_code(EXAMPLES / runtime) as code:
            code.file.seek(0)
            url, sha = archives.add(f"{runtime}-{code.filename}", code.file.read())
        spec = {"version": runtime, "label": "bench", "runtime": runtime, "archive_url": url, "archive_sha256": sha}
        spec.update(env={}, **fields)
        times, memory = [], None
        for round_ in range(args.rounds):
            name = f"{runtime}-footprint"
            began = time.monotonic()
            reply = agent.call("PUT", f"/v1/instances/{name}", spec)
            if reply.status != 200:
                say(f"{runtime}: the agent answered {reply.status}: {reply.body[:300]!r}")
                ok = False
                break
            port = reply.json()["port"]
            healthy = wait_until(lambda port=port: status(port) < 500, timeout=START_TIMEOUT[runtime], interval=0.02)
            elapsed = time.monotonic() - began
            if not healthy:
                say(f"{runtime}: not healthy within {START_TIMEOUT[runtime]} s")
                ok = False
            times.append(elapsed)
            if round_ == 0:
                for _ in range(5):
                    status(port)
                memory = footprint(agent, name)
            say(f"{runtime}: round {round_ + 1}: healthy in {elapsed:.2f} s")
            assert agent.call("DELETE", f"/v1/instances/{name}").status == 204
        if times and memory:
            rows.append((runtime, times, memory))
    say("")
    say(f"{'runtime':<8} {'processes':>9} {'RSS MiB':>8} {'PSS MiB':>8} {'first start s':>13} {'median start s':>14}")
    for runtime, times, (count, rss, pss) in rows:
        say(
            f"{runtime:<8} {count:>9} {rss / 1024:>8.1f} {pss / 1024:>8.1f} {times[0]:>13.2f}"
            f" {statistics.median(times):>14.2f}"
        )
    return ok and len(rows) == len(RUNTIMES)


def status(port: int) -> int:
    """The status of `GET /` on the instance; 599 when it does not answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/", headers={"User-Agent": "conpaas-footprint"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 599
    finally:
        connection.close()


def footprint(agent: AgentProcess, name: str) -> tuple[int, int, int]:
    """(processes, RSS kB, PSS kB) of the instance: its recorded processes and their descendants."""
    state = json.loads((agent.home / "state.json").read_text())["instances"][name]
    found, todo = set(), list(state.get("pids") or [state["pid"]])
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children(pid))
    rss = pss = 0
    for pid in found:
        rss += kilobytes(f"/proc/{pid}/status", "VmRSS:")
        pss += kilobytes(f"/proc/{pid}/smaps_rollup", "Pss:")
    return len(found), rss, pss


def kilobytes(path: str, field: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:  # the process ended meanwhile
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
