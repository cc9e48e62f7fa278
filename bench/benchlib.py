"""Shared pieces of the benchmarks: the machine line, a private platform, signed agent calls.

Everything here talks to 127.0.0.1 only. The platform is a real control plane (`manage.py up`,
see tests/harness.py) in a temporary CONPAAS_HOME; `platform()` stops everything it started
(ControlPlane.stop(), then `manage.py down`) whatever happens, and keeps the node logs of a
failed run under `<home>/evidence/` (`manage.py down` removes the node directories).
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import platform as pyplatform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # a benchmark runs by its path, and imports tests.harness
    sys.path.insert(0, str(ROOT))

import tests.harness as harness  # noqa: E402
import tests.s3_store as s3_store  # noqa: E402
from conpaas_common import client  # noqa: E402
from conpaas_common.procs import all_pids, cmdline, stat_fields  # noqa: E402
from tests.apps import label_app  # noqa: E402,F401  (re-exported for the programs)
from tests.harness import ControlPlane  # noqa: E402

# The harness finds manage.py through its REPO constant; run from this checkout whatever it says.
if not (Path(harness.REPO) / "manage.py").exists():
    harness.REPO = ROOT


def say(*parts) -> None:
    print(*parts, flush=True)


# --------------------------------------------------------------------------------------------
# the machine


def machine() -> dict:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    try:
        haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        haproxy = "haproxy not found"
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(os.cpu_count())
    return {
        "nproc": nproc,
        "cpu": cpu,
        "memory": memory,
        "python": f"{pyplatform.python_implementation()} {pyplatform.python_version()}",
        "haproxy": haproxy,
        "kernel": pyplatform.release(),
    }


def print_machine() -> None:
    m = machine()
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    say(f"machine: nproc={m['nproc']}  cpu={m['cpu']}  memory={m['memory']}  kernel={m['kernel']}")
    say(f"machine: python={m['python']}  {m['haproxy']}  load average before the run: {load}")


# --------------------------------------------------------------------------------------------
# statistics


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))  # ceil(q/100 * n)
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# --------------------------------------------------------------------------------------------
# a whole-run time limit


class RunTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise RunTimeout in the main thread after `seconds` (the `finally` blocks still run)."""

    def expired(signum, frame):
        raise RunTimeout(f"the benchmark exceeded its time limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------------------------
# the platform


class BenchControlPlane(ControlPlane):
    """The harness's control plane, patient with a busy machine: a slow first answer (more than
    the harness's 1 s read timeout) means "not yet", not a failed start."""

    def _answers(self) -> bool:
        try:
            return super()._answers()
        except requests.RequestException:
            return False


# --------------------------------------------------------------------------------------------
# CPU accounting (from /proc; Linux only)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (process group, utime+stime ticks, command line)."""
    found = {}
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields is not None:
            found[pid] = (int(fields[2]), int(fields[11]) + int(fields[12]), cmdline(pid))
    return found


def _busy_ticks() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU used between start() and stop(), by category of process (a category is a name and a
    predicate over (pgid, command line)), plus the whole machine's busy share."""

    def __init__(self, categories: dict):
        self.categories = categories

    def start(self) -> None:
        self.own_before = os.times()
        self.began = time.monotonic()
        self.before = _processes()
        self.busy_before = _busy_ticks()

    def stop(self) -> dict:
        elapsed = time.monotonic() - self.began
        after = _processes()
        busy, total = (a - b for a, b in zip(_busy_ticks(), self.busy_before, strict=True))
        used = dict.fromkeys(self.categories, 0.0)
        for pid, (pgid, ticks, command) in after.items():
            delta = ticks - self.before[pid][1] if pid in self.before else ticks
            for name, matches in self.categories.items():
                if matches(pgid, command):
                    used[name] += delta
                    break
        share = {name: ticks / CLOCK_TICKS / elapsed * 100 for name, ticks in used.items()}
        # this process and its waited-for children (wrk has exited by now: its time is there)
        own = os.times()
        spent = sum(
            getattr(own, k) - getattr(self.own_before, k)
            for k in ("user", "system", "children_user", "children_system")
        )
        share["load generator"] = spent / elapsed * 100
        share["machine busy"] = busy / total * 100 * (os.cpu_count() or 1) if total else 0.0
        return share


def cpu_line(share: dict) -> str:
    return "  ".join(f"{name}={value:.0f}%" for name, value in share.items()) + f" (of {(os.cpu_count() or 1) * 100}%)"


class Platform:
    """A private control plane and the helpers the benchmarks need around it."""

    def __init__(self, home: Path):
        self.home = home
        self.plane = BenchControlPlane(home)
        self.api = None
        self.failed = False

    # nodes and agents
    def node_config(self, node_name: str) -> dict:
        return json.loads((self.home / "nodes" / node_name / "node.json").read_text())

    def node_configs(self) -> list[dict]:
        found = []
        for path in sorted((self.home / "nodes").glob("*/node.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found

    def proxy_node(self, service: dict) -> dict:
        """node.json of the proxy node whose HAProxy frontend serves the service's url."""
        port = urlsplit(service["url"]).port
        names = {
            node["name"] for node in service.get("nodes", []) if "proxy" in node.get("roles", [node.get("role", "")])
        }
        configs = self.node_configs()
        for config in configs:
            if "proxy" in config.get("roles", []) and int(config["http_bind"].rsplit(":", 1)[1]) == port:
                return config
        for config in configs:
            if config.get("name") in names:
                return config
        raise RuntimeError(f"no proxy node config found for {service['url']} under {self.home / 'nodes'}")

    def backend_nodes(self, service: dict) -> list[dict]:
        names = {node["name"] for node in service.get("nodes", []) if "backend" in node.get("roles", [])}
        return [
            c for c in self.node_configs() if c.get("name") in names or (not names and "backend" in c.get("roles", []))
        ]

    def evidence(self) -> Path | None:
        """Copy the node logs (agent, HAProxy, instances) out of the node dirs before `down`."""
        nodes = self.home / "nodes"
        if not nodes.is_dir():
            return None
        target = self.home / "evidence"
        for path in nodes.rglob("*"):
            if path.is_file() and (path.suffix in (".log", ".json", ".map", ".cfg") or path.name.endswith(".state")):
                if "versions" in path.relative_to(nodes).parts:
                    continue
                destination = target / path.relative_to(nodes)
                destination.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    shutil.copy2(path, destination)
        return target


def agent_call(config: dict, method: str, path: str, body: object = None, timeout: float = 60.0) -> tuple[int, object]:
    """One signed request to a node's agent; returns (status, decoded JSON, else the text)."""
    raw = b"" if body is None else json.dumps(body).encode()
    reply = client.call(f"http://{config['agent_bind']}", config["secret"], method, path, raw, timeout=timeout)
    try:
        payload = reply.json()
    except ValueError:
        payload = reply.body.decode(errors="replace")
    return reply.status, payload


@contextlib.contextmanager
def platform(
    name: str, keep: bool = False, settings: dict[str, str] | None = None, secrets: dict[str, str] | None = None
):
    """Start a private platform (`settings`: more environment variables for its control plane,
    printed; `secrets`: more, never printed); on the way out stop everything it started."""
    home = Path(tempfile.mkdtemp(prefix=f"conpaas-bench-{name}-"))
    env = Platform(home)
    env.plane.env.update({**(settings or {}), **(secrets or {})})
    say(f"platform: CONPAAS_HOME={home}" + "".join(f"  {k}={v}" for k, v in (settings or {}).items()))
    try:
        env.plane.manage("migrate", "--noinput")
        started = time.monotonic()
        env.plane.start()
        say(f"platform: control plane up on {env.plane.url} in {time.monotonic() - started:.1f} s")
        env.api = env.plane.client("bench")
        yield env
    except BaseException:
        env.failed = True
        raise
    finally:
        if env.failed or keep:
            with contextlib.suppress(Exception):
                kept = env.evidence()
                if kept:
                    say(f"platform: node logs kept in {kept}")
        with contextlib.suppress(Exception):
            env.plane.stop()
        try:
            done = env.plane.manage("down", check=False)
            say(f"platform: manage.py down -> {done.returncode} {done.stdout.strip()}")
            if done.returncode:
                say(f"platform: manage.py down said: {done.stderr.strip()[-1500:]}")
        except Exception as exc:  # noqa: BLE001 - report and go on
            say(f"platform: manage.py down failed: {exc!r}")
        if env.failed or keep:
            say(f"platform: kept {home} (control-plane.log, evidence/)")
        else:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def backup_store(archive_timeout_s: int, check_interval_s: int):
    """A SeaweedFS S3 store of the run's own on 127.0.0.1 (tests/s3_store.py; isolated nodes
    reach it through the bridge's gateway, which the local cloud forwards), with a bucket for
    backups: yields (settings, secrets) for platform(); stopped, by its pid, and removed after."""
    home = Path(tempfile.mkdtemp(prefix="conpaas-bench-store-"))
    weed = None
    # tests/s3_store.py's `-volume.max=0` sizes the store by free disk / 30 GiB volumes: with
    # less than ~90 GB free that is 2 volumes, both taken by the filer's first writes, and the
    # bucket's collection gets none (PutObject: "No writable volumes"). Its weed, given 1 GiB
    # volumes as the platform's storage nodes have (Go's flags: the last value wins).
    wrapper = home / "weed"
    wrapper.write_text(f'#!/bin/sh\nexec {s3_store.WEED} "$@" -master.volumeSizeLimitMB=1024 -volume.max=100\n')
    wrapper.chmod(0o700)
    real, s3_store.WEED = s3_store.WEED, wrapper
    try:
        weed, store = s3_store.start_weed(home)
        s3_store.WEED = real
        store.client().create_bucket(Bucket="backups")
        say(f"backup store: SeaweedFS ({home}) at {store.endpoint}, bucket backups")
        settings = {
            "CONPAAS_BACKUP_S3_ENDPOINT": store.endpoint,
            "CONPAAS_BACKUP_S3_BUCKET": "backups",
            "CONPAAS_BACKUP_S3_ACCESS_KEY": store.access_key,
            "CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S": str(archive_timeout_s),
            "CONPAAS_BACKUP_CHECK_INTERVAL": str(check_interval_s),
        }
        yield settings, {"CONPAAS_BACKUP_S3_SECRET_KEY": store.secret_key}
    finally:
        s3_store.WEED = real
        if weed is not None:
            s3_store.stop_weed(weed)
        shutil.rmtree(home, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# services


def environments(api, service_id: int) -> dict:
    response = api.get(f"/api/v1/services/{service_id}/environments/")
    response.raise_for_status()
    return {env["name"]: env for env in response.json()}


def upload(api, service_id: int, build: str, label: str) -> dict:
    response = api.upload(service_id, label_app(build), label, filename=f"{label}.zip")
    if response.status_code != 201:
        raise RuntimeError(f"upload of {label} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def deploy(api, service_id: int, environment: str, version: dict, timeout: float = 90) -> dict:
    response = api.patch(f"/api/v1/services/{service_id}/environments/{environment}/", json={"version": version["id"]})
    if response.status_code != 202:
        raise RuntimeError(
            f"deploy of {version['label']} to {environment} answered {response.status_code}: {response.text[:300]}"
        )
    operation = api.wait_operation(response.json(), timeout=timeout)
    if operation["state"] != "succeeded":
        raise RuntimeError(
            f"deploy of {version['label']} to {environment} {operation['state']}: {operation.get('error')}"
        )
    return operation


def get_text(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request(
            "GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), headers=headers or {}
        )
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def serving(api, name: str, builds: dict[str, tuple[str, str]]) -> tuple[dict, dict[str, dict]]:
    """A new service whose environments each serve a fresh upload, {environment: (build, label)}:
    the service as the API shows it then, and the code version of each environment."""
    service_id = api.create_service(name)["id"]
    versions = {env: upload(api, service_id, build, label) for env, (build, label) in builds.items()}
    for env, version in versions.items():
        deploy(api, service_id, env, version)
    service = api.get(f"/api/v1/services/{service_id}/").json()
    check_loopback(service["url"])
    return service, versions


def check_loopback(url: str) -> None:
    """Traffic stays on this machine: 127.0.0.1, or an isolated local node's own address on this
    machine's bridge (README, Isolation)."""
    host = urlsplit(url).hostname
    if host in ("127.0.0.1", "localhost", "::1"):
        return
    network = ipaddress.ip_network(os.environ.get("CONPAAS_LOCAL_NETWORK", "10.77.0.0/16"))
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host) in network and Path("/sys/class/net/conpaas0").exists():
            return
    raise SystemExit(f"refusing to load {url}: the benchmarks only send traffic to this machine")


def run_benchmark(
    title: str,
    short: str,
    run,
    args,
    target: str,
    settings: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
) -> int:
    """Print the machine, run `run(env, args)` on a private platform (`settings`, `secrets`: see
    platform()) within the time limit, and print the PASS/FAIL line; the exit status is 0 on PASS."""
    say(f"== {title} ==")
    print_machine()
    verdict = False
    try:
        with time_limit(args.time_limit), platform(short, args.keep, settings, secrets) as env:
            verdict = run(env, args)
            env.failed = not verdict
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        say(f"error: {type(exc).__name__}: {exc}")
        verdict = False
    say(f"{'PASS' if verdict else 'FAIL'}: {title} (target: {target})")
    return 0 if verdict else 1
