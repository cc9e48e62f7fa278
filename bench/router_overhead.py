"""Router overhead: throughput and latency through the service's HAProxy router versus straight
to the gunicorn instance behind it, with nginx as a peer in front of the same instance.

A python service runs one small app in production. The same closed-loop load (8 keep-alive
connections, no think time, 10 s per phase) is sent to the production URL (through HAProxy),
to the instance's own port (found through the backend node's agent, signed `GET /v1/status`)
and to an nginx (Debian's nginx-light, when installed) this program starts beside the router (the
router node's network namespace and cgroups when the node is isolated) with its own config on free
ports: one server with an access log to a file, one without, both `proxy_pass` to the instance's
address through an `upstream { keepalive 16; }`, and, when the instance has one, a third with an
access log to the instance's unix socket — where the router itself connects to an instance of its
own node, so that comparison is printed too. Phases are interleaved — direct, router, nginx, the
other nginx servers, then the next round in a rotated order — to cancel drift; the figures are
the means over the phases of each kind. The load generator is `wrk` when it is installed (a
Python client may itself be the bottleneck), else a threaded Python client; the output says which.

On an isolated node the "direct" phase is no baseline: wrk in this machine's namespace pays a
port search for each of the instance's closed connections (TIME_WAIT; the node's own namespace
reuses them, see services/clouds/network.py), so compare the router with nginx, not with it.
Target: router/direct >= nginx (access log on, to the instance's address)/direct — the same as
router >= nginx — or >= --target-ratio when nginx is absent.

Run: .venv/bin/python bench/router_overhead.py [--duration 10] [--connections 8] [--rounds 3] [--python]
"""

from __future__ import annotations

import argparse
import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import percentile, say  # noqa: E402

from conpaas_agent.runtimes.base import SOCKET_NAME  # noqa: E402
from conpaas_common.procs import children, free_port  # noqa: E402
from services.clouds.limits import JOIN_CGROUPS, this_machine  # noqa: E402

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


# --------------------------------------------------------------------------------------------
# the nginx peer

NGINX_CONFIG = """\
# Written by bench/router_overhead.py for one run.
daemon off;
master_process on;
worker_processes auto;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream instance {{
        server {upstream};
        keepalive 16;
    }}
{socket_upstream}    server {{
        listen {host}:{port_log};
        access_log {dir}/access.log combined;
        location / {{
            proxy_pass http://instance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen {host}:{port_nolog};
        access_log off;
        location / {{
            proxy_pass http://instance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
{socket_server}}}
"""
NGINX_SOCKET_UPSTREAM = """\
    upstream instance_socket {{
        server unix:{socket};
        keepalive 16;
    }}
"""
NGINX_SOCKET_SERVER = """\
    server {{
        listen {host}:{port_socket};
        access_log {dir}/access-socket.log combined;
        location / {{
            proxy_pass http://instance_socket;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


@dataclass(frozen=True)
class Place:
    """Where the nginx peer runs: beside the router it is compared with. On an isolated node that
    is the node's network namespace and cgroups (the router's CPU weight, and its network path:
    the client crosses the bridge, the proxy reaches the instance inside the node); else this
    machine's 127.0.0.1."""

    host: str = "127.0.0.1"
    netns: str = ""
    cgroup_procs: tuple[str, ...] = ()

    def argv(self, command: list[str]) -> list[str]:
        if not self.netns:
            return command
        return ["sh", "-c", JOIN_CGROUPS, "sh", *self.cgroup_procs, "--", "ip", "netns", "exec", self.netns, *command]

    def describe(self) -> str:
        if not self.netns:
            return "on this machine (127.0.0.1)"
        return f"in the router's node (network namespace {self.netns}, its cgroups), listening on {self.host}"


def router_place(env, service: dict) -> Place:
    """The router node's network namespace and cgroups, read from its agent's process."""
    config = env.proxy_node(service)
    host = config["http_bind"].rsplit(":", 1)[0]
    if host in ("127.0.0.1", "localhost"):
        return Place()
    pid = int((env.home / "nodes" / config["name"] / "agent.pid").read_text().strip())
    netns = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()
    if not netns:
        raise RuntimeError(f"the agent of {config['name']} (pid {pid}) is in no named network namespace")
    procs = [str(path) for path in this_machine(pid).own_procs()]
    return Place(host, netns, tuple(procs))


def nginx_binary() -> str | None:
    """Debian's nginx is /usr/sbin/nginx, which a non-root PATH may not have."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


class Nginx:
    """One nginx master (and its workers) with its own config in a temporary directory; `stop()`
    ends exactly that master and the workers it forked, by pid."""

    def __init__(self, upstream: str, place: Place, socket: str = ""):
        self.dir = Path(tempfile.mkdtemp(prefix="conpaas-bench-nginx-"))
        os.chmod(self.dir, 0o755)  # its workers run as the instance's user (below)
        self.place = place
        # Free here and, in the node's own network namespace, free there too.
        self.port_log, self.port_nolog, self.port_socket = free_port(), free_port(), free_port()
        self.socket = socket
        # As root, workers as the instance's user: the socket's directory is that user's alone.
        user = ""
        if os.geteuid() == 0:
            owner = os.stat(socket or self.dir)
            user = f"user {pwd.getpwuid(owner.st_uid).pw_name} {grp.getgrgid(owner.st_gid).gr_name};\n"
        self.config = self.dir / "nginx.conf"
        self.config.write_text(
            NGINX_CONFIG.format(
                dir=self.dir,
                user=user,
                host=place.host,
                upstream=upstream,
                port_log=self.port_log,
                port_nolog=self.port_nolog,
                socket_upstream=NGINX_SOCKET_UPSTREAM.format(socket=socket) if socket else "",
                socket_server=NGINX_SOCKET_SERVER.format(dir=self.dir, host=place.host, port_socket=self.port_socket)
                if socket
                else "",
            )
        )
        self.process: subprocess.Popen | None = None
        self.workers: list[int] = []
        self.binary = nginx_binary() or "nginx"
        self.version = subprocess.run([self.binary, "-v"], capture_output=True, text=True).stderr.strip()

    @property
    def urls(self) -> list[str]:
        urls = [f"http://{self.place.host}:{self.port_log}/", f"http://{self.place.host}:{self.port_nolog}/"]
        return urls + ([f"http://{self.place.host}:{self.port_socket}/"] if self.socket else [])

    def start(self) -> None:
        log = open(self.dir / "stderr.log", "ab")
        self.process = subprocess.Popen(  # `ip netns exec` execs nginx: this pid is nginx's master
            self.place.argv(
                [self.binary, "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.config)]
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited at start: {(self.dir / 'error.log').read_text()[-500:]}")
            try:
                if all(benchlib.get_text(url, timeout=1)[0] == 200 for url in self.urls):
                    self.workers = children(self.process.pid)
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("nginx did not answer within 10 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.workers = sorted(set(self.workers) | set(children(self.process.pid)))
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: the master ends its workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in self.workers:  # a worker left behind by a killed master
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"nginx"):
                        os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        shutil.rmtree(self.dir, ignore_errors=True)

    def access_log_lines(self) -> int:
        try:
            with open(self.dir / "access.log", "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0


def instance_url(env, service: dict, version: dict) -> tuple[str, str]:
    """The production instance's URL, and its unix socket ("" if it has none)."""
    for config in env.backend_nodes(service):
        status, payload = benchlib.agent_call(config, "GET", "/v1/status")
        if status != 200:
            raise RuntimeError(f"GET /v1/status on {config['name']} answered {status}: {payload}")
        for name, instance in (payload.get("instances") or {}).items():
            if str(instance.get("version")) == str(version["id"]) or instance.get("label") == version["label"]:
                host = config["agent_bind"].rsplit(":", 1)[0]
                socket = Path(config["home"]) / "instances" / name / SOCKET_NAME
                return f"http://{host}:{instance['port']}/", str(socket) if socket.is_socket() else ""
    raise RuntimeError("no running instance of the production version found through the agents")


def router_target(env, service: dict) -> str:
    """Where the router's HAProxy connects for the production server: its config's server line."""
    config = Path(env.proxy_node(service)["home"]) / "haproxy" / "haproxy.cfg"
    servers = [line.split()[2] for line in config.read_text().splitlines() if line.strip().startswith("server ")]
    return ", ".join(servers) or "no server"


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
    own = os.getpgid(0)
    return benchlib.CpuMeter(
        {
            "haproxy": lambda g, c: g in groups and "haproxy" in c,
            "nginx": lambda g, c: g == own and c.startswith("nginx"),
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
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one phase per target, interleaved")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load on each target first")
    parser.add_argument("--python", action="store_true", help="use the Python client even when wrk is installed")
    parser.add_argument("--no-nginx", action="store_true", help="leave the nginx peer out")
    parser.add_argument(
        "--target-ratio", type=float, default=0.9, help="router/direct target when there is no nginx peer"
    )
    parser.add_argument("--time-limit", type=float, default=420.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()

    nginx = nginx_binary() and not args.no_nginx
    target = (
        "router/direct >= nginx (access log on)/direct"
        if nginx
        else f"router throughput >= {args.target_ratio:.2f} x direct"
    )
    return benchlib.run_benchmark("router overhead", "router", run, args, target)


def run(env, args) -> bool:
    try:
        return measure(env, args, nginx_started)
    finally:
        for peer in STARTED:
            peer.stop()
        STARTED.clear()


STARTED: list[Nginx] = []


def nginx_started(upstream: str, place: Place, socket: str = "") -> Nginx:
    peer = Nginx(upstream, place, socket)
    STARTED.append(peer)  # stopped by run() whatever happens
    peer.start()
    return peer


def measure(env, args, start_nginx) -> bool:
    api = env.api
    service, versions = benchlib.serving(api, "routerbench", {"production": ("router-v1", "v1")})
    version, router = versions["production"], service["url"]
    direct, socket = instance_url(env, service, version)
    targets = {"direct": direct, "router": router}
    say(f"router: HAProxy connects to the instance at {router_target(env, service)}")
    nginx = None
    if nginx_binary() and not args.no_nginx:
        nginx = start_nginx(urlsplit(direct).netloc, router_place(env, service), socket)
        targets["nginx"], targets["nginx-nolog"], *rest = nginx.urls
        if rest:
            targets["nginx-socket"] = rest[0]
        say(
            f"peer: {nginx.version} {nginx.place.describe()}, worker_processes auto,"
            f" upstream keepalive 16 (HTTP/1.1) to the same instance at {urlsplit(direct).netloc};"
            " 'nginx' logs each request to a file (access_log, combined format), 'nginx-nolog' has access_log off"
            + (f"; 'nginx-socket' logs too and connects to the instance's unix socket {socket}" if rest else "")
        )
    else:
        why = "left out (--no-nginx)" if args.no_nginx else "not installed (apt-get install nginx-light)"
        say(f"peer: nginx {why}")
    for url in targets.values():
        benchlib.check_loopback(url)
        answer = benchlib.get_text(url)
        assert answer == (200, "v1\n"), f"{url} answered {answer}"

    wrk = shutil.which("wrk") if not args.python else None
    if wrk:
        version_line = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        say(
            f"load generator: wrk ({(version_line or ['?'])[0].strip()}), {args.threads} threads,"
            f" {args.connections} keep-alive connections, closed loop, {args.duration:.0f} s per phase,"
            " not pinned (wrk, HAProxy, nginx and gunicorn share every core, the same way in every phase)"
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

    say("targets: " + "   ".join(f"{name}: {url}" for name, url in targets.items()))
    if args.warmup > 0:
        for url in targets.values():
            phase(url, max(1.0, args.warmup))

    meter = cpu_meter(env)
    names = list(targets)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for round_ in range(1, args.rounds + 1):
        shift = (round_ - 1) % len(names)  # rotate the order: no target always follows the same one
        for name in names[shift:] + names[:shift]:
            meter.start()
            result = phase(targets[name], args.duration)
            result["cpu"] = meter.stop()
            results[name].append(result)
            say(
                f"round {round_} {name:11}: {result['rps']:9.1f} req/s  p50={result['p50'] * 1000:.2f} ms"
                f"  p99={result['p99'] * 1000:.2f} ms  requests={result['requests']}  errors={result['errors']}"
                + (f"  ({result['socket_errors']})" if result["socket_errors"] else "")
            )
            say(f"round {round_} {name:11}  cpu: {benchlib.cpu_line(result['cpu'])}")

    means = {}
    cpu_per_request = {}  # all the CPU a request costs, whoever spends it
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
            for key in ("haproxy", "nginx", "gunicorn", "agent", "load generator")
        }
        say(
            f"{name} (mean of {len(runs)}) cpu per request: "
            + "  ".join(f"{key}={value:.0f} us" for key, value in per_request.items())
        )
        cpu_per_request[name] = sum(per_request.values())
    base = means["direct"]["rps"]
    ratios = {name: (means[name]["rps"] / base if base else 0.0) for name in names if name != "direct"}
    # The spread: each round's ratio against the direct phase of the same round.
    for name in ratios:
        per_round = [r["rps"] / d["rps"] for r, d in zip(results[name], results["direct"], strict=True) if d["rps"]]
        say(
            f"ratio {name}/direct throughput: {ratios[name]:.3f}   per round: "
            + " ".join(f"{x:.3f}" for x in per_round)
            + f"   added p50 latency: {(means[name]['p50'] - means['direct']['p50']) * 1000:+.2f} ms"
        )
    # On a CPU-bound machine throughput is inversely proportional to the CPU a request costs;
    # unlike throughput, that barely moves when other work shares the machine.
    say(
        "cpu-bound estimate of the ratios (direct's CPU per request / the target's): "
        + "  ".join(f"{name}={cpu_per_request['direct'] / cpu_per_request[name]:.3f}" for name in ratios)
    )
    errors = sum(r["errors"] for runs in results.values() for r in runs)
    if errors:
        say(f"errors during the measured phases: {errors}")
    if nginx is not None:
        say(f"nginx access log: {nginx.access_log_lines()} lines written")
        # The same comparison without the direct phase, whose load generator pays what the
        # proxies do not (see the docstring): router and each nginx in the same rounds.
        for peer in [name for name in ("nginx", "nginx-nolog", "nginx-socket") if name in means]:
            say(f"ratio router/{peer} throughput: {means['router']['rps'] / means[peer]['rps']:.3f}")
        return ratios["router"] >= ratios["nginx"] and errors == 0
    return ratios["router"] >= args.target_ratio and errors == 0


if __name__ == "__main__":
    sys.exit(main())
