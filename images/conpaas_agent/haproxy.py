"""HAProxy on a proxy node: config and map rendering, the runtime API client, the process
(master-worker, seamless reload) and the convergence of the desired routing.

Verified against HAProxy 2.6.12:
- ``add server slotK/NAME ADDR:PORT check inter 1s fall 2 rise 1`` works on a
  ``balance roundrobin`` backend; the new server starts in maintenance with checks disabled,
  so ``enable health`` then ``enable server`` must follow. It takes traffic (state UP) right
  after ``enable server``, before its first check has run.
- ``del server`` works for dynamic and for config-declared servers, but only in maintenance
  ("Only servers in maintenance mode can be deleted."); it is refused while the server still
  has sessions or queued requests.
- ``prepare map FILE`` answers ``New version created: N``; ``add map @N FILE KEY VALUE`` and
  ``commit map @N FILE`` work, and the commit switches the whole map at once.
- SIGUSR2 to the master reloads; the new worker takes over the admin socket, so
  ``show info``'s ``Pid`` changes once the new worker runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from .metrics import LOG_FORMAT, LOG_SAMPLE, RequestLog
from .procs import pid_alive

log = logging.getLogger("conpaas_agent.haproxy")

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # version keys, server names
ENV_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # environment names
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # preview keys (same as the cookie filter)
HEALTH_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/%&=+,:@?-]{0,200}$")  # nothing HAProxy would parse
HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
INITIAL_SLOTS = 8
CHECK_OPTIONS = "check inter 1s fall 2 rise 1"
NO_VERSION_BACKEND = "conpaas_noversion"


class HAProxyError(Exception):
    """HAProxy refused a command, did not answer, or failed to start or reload."""


# --- runtime API -------------------------------------------------------------------------


class RuntimeAPI:
    """The admin stats socket (``level admin``): one command per connection."""

    def __init__(self, path: str, timeout: float = 10.0):
        self.path = path
        self.timeout = timeout

    def execute(self, command: str) -> str:
        if "\n" in command or "\r" in command:
            raise HAProxyError("a runtime API command must be one line")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
        except OSError as exc:
            raise HAProxyError(f"HAProxy runtime API at {self.path} did not answer: {exc}") from exc
        return b"".join(chunks).decode(errors="replace")

    def _expect(self, command: str, ok: tuple[str, ...] = ("",)) -> str:
        """Run a command whose answer is one of ``ok`` (prefixes; "" = empty answer)."""
        answer = self.execute(command).strip()
        for prefix in ok:
            if (prefix == "" and answer == "") or (prefix and answer.startswith(prefix)):
                return answer
        raise HAProxyError(f"HAProxy refused '{command}': {answer or 'no answer'}")

    def ping(self) -> bool:
        try:
            return "Pid:" in self.execute("show info")
        except HAProxyError:
            return False

    def info(self) -> dict[str, str]:
        out = {}
        for line in self.execute("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def worker_pid(self) -> int | None:
        pid = self.info().get("Pid")
        return int(pid) if pid and pid.isdigit() else None

    # maps
    def show_map(self, map_path: str) -> dict[str, str]:
        out = {}
        for line in self.execute(f"show map {map_path}").splitlines():
            parts = line.split()
            if len(parts) == 3:  # "<ref> key value"
                out[parts[1]] = parts[2]
            elif line.strip() and not line.startswith("0x"):
                raise HAProxyError(f"HAProxy cannot show map {map_path}: {line.strip()}")
        return out

    def replace_map(self, map_path: str, entries: dict[str, str]) -> None:
        """One transaction: ``prepare map``, ``add map @V`` per entry, ``commit map @V``."""
        answer = self._expect(f"prepare map {map_path}", ("New version created:",))
        version = answer.rsplit(":", 1)[1].strip()
        if not version.isdigit():
            raise HAProxyError(f"HAProxy answered an unexpected map version: {answer}")
        for key, value in entries.items():
            self._expect(f"add map @{version} {map_path} {key} {value}")
        self._expect(f"commit map @{version} {map_path}")

    # servers
    def add_server(self, backend: str, name: str, address: str, port: int) -> None:
        target = f"{backend}/{name}"
        self._expect(f"add server {target} {address}:{port} {CHECK_OPTIONS}", ("New server registered",))
        self._expect(f"enable health {target}")
        self._expect(f"enable server {target}")

    def set_server_address(self, backend: str, name: str, address: str, port: int) -> None:
        self._expect(
            f"set server {backend}/{name} addr {address} port {port}",
            ("IP changed", "no need to change", "port changed", ""),
        )

    def enable_server(self, backend: str, name: str) -> None:
        self._expect(f"enable server {backend}/{name}")

    def disable_server(self, backend: str, name: str) -> None:
        self._expect(f"disable server {backend}/{name}")

    def shutdown_sessions(self, backend: str, name: str) -> None:
        self._expect(f"shutdown sessions server {backend}/{name}")

    def del_server(self, backend: str, name: str) -> None:
        self._expect(f"del server {backend}/{name}", ("Server deleted",))

    def show_servers_state(self) -> str:
        return self.execute("show servers state")

    def show_stat(self) -> list[dict[str, str]]:
        """``show stat`` as dicts keyed by the CSV header (pxname, svname, scur, status …)."""
        lines = self.execute("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            raise HAProxyError(f"HAProxy answered show stat unexpectedly: {lines[:1]}")
        header = lines[0][2:].split(",")
        return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line.strip()]

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """(backend, server) -> stat row, servers only (no FRONTEND/BACKEND rows)."""
        return {
            (row["pxname"], row["svname"]): row
            for row in self.show_stat()
            if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("type") == "2"
        }


def parse_servers_state(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """``show servers state`` (format version 1) -> (backend, server) -> fields."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next((line[2:].split() for line in lines if line.startswith("# be_id")), None)
    if header is None:
        return {}
    out = {}
    for line in lines:
        if line.startswith("#") or line.strip() == "1":
            continue
        fields = dict(zip(header, line.split(), strict=False))
        if "be_name" in fields and "srv_name" in fields:
            out[(fields["be_name"], fields["srv_name"])] = fields
    return out


# --- rendering ---------------------------------------------------------------------------


MAX_SOCKET_PATH = 97


@dataclass(frozen=True)
class Paths:
    dir: str

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "haproxy.cfg")

    @property
    def keys_map(self) -> str:
        return os.path.join(self.dir, "keys.map")

    @property
    def envs_map(self) -> str:
        return os.path.join(self.dir, "envs.map")

    @property
    def socket_dir(self) -> str:
        """Where the unix sockets live: beside the config, unless that path is too long for a
        socket address (HAProxy takes at most 97 bytes); then a short private directory."""
        if len(os.path.join(self.dir, "requests.sock").encode()) <= MAX_SOCKET_PATH:
            return self.dir
        digest = hashlib.sha256(os.path.abspath(self.dir).encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"conpaas-{digest}")

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.socket_dir, "admin.sock")

    @property
    def master_socket(self) -> str:
        return os.path.join(self.socket_dir, "master.sock")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.dir, "haproxy.pid")

    @property
    def request_log(self) -> str:
        return os.path.join(self.socket_dir, "requests.sock")

    @property
    def server_state(self) -> str:
        return os.path.join(self.dir, "server-state")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "haproxy.log")


def render_map(entries: dict[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))


def render_config(
    paths: Paths,
    http_bind: str,
    slot_count: int,
    slot_servers: dict[str, list[dict]],
    health_path: str = "/",
) -> str:
    """The whole haproxy.cfg: one frontend, the 503 backend and ``slot_count`` slot backends.

    ``slot_servers`` maps a slot name to its servers (``name``, ``address``, ``port``), so a
    reload or a restart comes back with the servers the runtime API had added.
    """
    keys, envs = paths.keys_map, paths.envs_map
    lines = [
        "# Written by the ConPaaS agent; rewritten before every change. Do not edit.",
        "global",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.server_state}",
        # One thread: on a small node HAProxy shares the cores with the instances, and a second
        # thread costs more CPU per request (cross-thread wakeups) than it brings.
        "    nbthread 1",
        # One datagram per LOG_SAMPLE requests to the agent (metrics.py: percentiles; the counts
        # come from HAProxy's counters); dropped when the agent is down.
        f"    log {paths.request_log} len 1024 sample 1:{LOG_SAMPLE} local0 info",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 10s",
        "    timeout http-request 10s",
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    load-server-state-from-file global",
        "",
        "frontend web",
        f"    bind {http_bind}",
        "    log global",
        "    option dontlognull",
        f'    log-format "{LOG_FORMAT}"',
        # Routing key: header, else query parameter, else cookie.
        "    http-request set-var(txn.qkey) url_param(conpaas-env)",
        "    http-request set-var(txn.key) req.hdr(X-Conpaas-Env) if { req.hdr(X-Conpaas-Env) -m found }",
        "    http-request set-var(txn.key) var(txn.qkey) if !{ var(txn.key) -m found } { var(txn.qkey) -m found }",
        "    http-request set-var(txn.key) req.cook(conpaas-env) "
        "if !{ var(txn.key) -m found } { req.cook(conpaas-env) -m found }",
        # keys.map: preview key -> environment; envs.map: environment -> slot backend.
        f"    http-request set-var(txn.env) var(txn.key),map({keys})",
        f"    http-request set-var(txn.slot) var(txn.env),map({envs})",
        # Unknown key, or an environment without a version: production, like no key at all.
        "    http-request set-var(txn.env) str(production) if !{ var(txn.slot) -m found }",
        f"    http-request set-var(txn.slot) var(txn.env),map({envs}) if !{{ var(txn.slot) -m found }}",
        "    use_backend %[var(txn.slot)] if { var(txn.slot) -m found }",
        f"    default_backend {NO_VERSION_BACKEND}",
        "    http-response del-header X-Conpaas-Env",
        "    http-response set-header X-Conpaas-Env %[var(txn.env)] if !{ var(txn.env) -m str production }",
        # The query parameter sets the cookie, for any well-formed value (known or not, so
        # the answer reveals nothing); the regex keeps anything else out of the header.
        '    http-response add-header Set-Cookie "conpaas-env=%[var(txn.qkey)]; Path=/; HttpOnly; SameSite=Lax" '
        "if { var(txn.qkey) -m reg ^[A-Za-z0-9_-]{1,128}$ } !{ var(txn.qkey) -m str production }",
        '    http-response add-header Set-Cookie "conpaas-env=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0" '
        "if { var(txn.qkey) -m str production }",
        "",
        f"backend {NO_VERSION_BACKEND}",
        "    http-request return status 503 content-type text/plain "
        'string "No code version is deployed to production."',
    ]
    for index in range(slot_count):
        slot = f"slot{index}"
        lines += [
            "",
            f"backend {slot}",
            "    balance roundrobin",
            f"    option httpchk GET {health_path}",
            "    http-check expect ! rstatus ^5",
        ]
        for server in sorted(slot_servers.get(slot, []), key=lambda s: s["name"]):
            lines.append(f"    server {server['name']} {server['address']}:{server['port']} {CHECK_OPTIONS}")
    return "\n".join(lines) + "\n"


def write_if_changed(path: str, content: str) -> bool:
    try:
        with open(path) as fh:
            if fh.read() == content:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)
    return True


# --- desired routing ---------------------------------------------------------------------


class Unhealthy(Exception):
    """A gated change was refused: the servers it needs are not passing their health checks."""


class InvalidRouting(ValueError):
    """The desired routing body is malformed (the agent answers 400)."""


def validate_routing(body: object) -> dict:
    """Check a ``PUT /v1/proxy`` body and return it normalised."""
    if not isinstance(body, dict):
        raise InvalidRouting("the body must be a JSON object")
    unknown = set(body) - {"health_path", "backends", "routes", "preview_keys", "drain_timeout"}
    if unknown:
        raise InvalidRouting(f"unknown field(s): {', '.join(sorted(unknown))}")
    health_path = body.get("health_path", "/")
    if not isinstance(health_path, str) or not HEALTH_PATH_RE.match(health_path):
        raise InvalidRouting("health_path must be a path starting with / without spaces or quotes")
    drain_timeout = body.get("drain_timeout", 30)
    if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)) or not 0 <= drain_timeout <= 3600:
        raise InvalidRouting("drain_timeout must be a number of seconds between 0 and 3600")
    backends = body.get("backends", {})
    if not isinstance(backends, dict):
        raise InvalidRouting("backends must be an object")
    clean_backends: dict[str, list[dict]] = {}
    for key, servers in backends.items():
        if not NAME_RE.match(key):
            raise InvalidRouting(f"backend key {key!r} must match {NAME_RE.pattern}")
        if not isinstance(servers, list):
            raise InvalidRouting(f"backend {key} must be a list of servers")
        seen = set()
        clean_backends[key] = []
        for server in servers:
            if not isinstance(server, dict):
                raise InvalidRouting(f"backend {key} has a server that is not an object")
            name, address, port = server.get("name"), server.get("address"), server.get("port")
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise InvalidRouting(f"backend {key}: server name {name!r} must match {NAME_RE.pattern}")
            if name in seen:
                raise InvalidRouting(f"backend {key}: server {name} is listed twice")
            seen.add(name)
            if not isinstance(address, str) or not HOST_RE.match(address):
                raise InvalidRouting(f"backend {key}: server {name} has an invalid address")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidRouting(f"backend {key}: server {name} has an invalid port")
            clean_backends[key].append({"name": name, "address": address, "port": port})
    routes = body.get("routes", {})
    if not isinstance(routes, dict):
        raise InvalidRouting("routes must be an object")
    for env, key in routes.items():
        if not ENV_RE.match(env):
            raise InvalidRouting(f"environment name {env!r} must match {ENV_RE.pattern}")
        if key not in clean_backends:
            raise InvalidRouting(f"route {env} points at backend {key!r}, which is not in backends")
    preview_keys = body.get("preview_keys", {})
    if not isinstance(preview_keys, dict):
        raise InvalidRouting("preview_keys must be an object")
    for key, env in preview_keys.items():
        if not KEY_RE.match(key) or key.lower() == "production":
            raise InvalidRouting(f"a preview key must match {KEY_RE.pattern} and not be 'production'")
        if not isinstance(env, str) or not ENV_RE.match(env):
            raise InvalidRouting(f"preview key target {env!r} must be an environment name")
    return {
        "health_path": health_path,
        "backends": clean_backends,
        "routes": dict(routes),
        "preview_keys": dict(preview_keys),
        "drain_timeout": drain_timeout,
    }


EMPTY_ROUTING = {"health_path": "/", "backends": {}, "routes": {}, "preview_keys": {}, "drain_timeout": 30}


# --- the process and the convergence ------------------------------------------------------


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class Proxy:
    """The proxy role of one node.

    ``state`` (persisted by the caller through ``save``) holds the last desired routing, the
    slot of each version backend and the number of slot backends.
    """

    def __init__(self, home: str, http_bind: str, state: dict | None, save, binary: str | None = None):
        self.paths = Paths(os.path.join(home, "haproxy"))
        self.http_bind = http_bind
        self.binary = binary or os.environ.get("CONPAAS_HAPROXY") or "/usr/sbin/haproxy"
        state = state or {}
        self.routing: dict = state.get("routing") or dict(EMPTY_ROUTING)
        self.slots: dict[str, str] = dict(state.get("slots") or {})  # version key -> slotK
        self.slot_count: int = int(state.get("slot_count") or INITIAL_SLOTS)
        self._save = save
        self.api = RuntimeAPI(self.paths.admin_socket)
        self.lock = threading.RLock()
        self.process: subprocess.Popen | None = None
        self.request_log = RequestLog(
            self.paths.request_log, stats=lambda: (self.api.info(), self.api.show_stat()), sample=LOG_SAMPLE
        )

    # state
    def state(self) -> dict:
        return {"routing": self.routing, "slots": dict(self.slots), "slot_count": self.slot_count}

    def _slot_servers(self, routing: dict) -> dict[str, list[dict]]:
        return {self.slots[key]: servers for key, servers in routing["backends"].items() if key in self.slots}

    def _envs_entries(self, routing: dict) -> dict[str, str]:
        return {env: self.slots[key] for env, key in routing["routes"].items()}

    def write_files(self, routing: dict) -> None:
        """Config and maps for ``routing``: what a reload or a restart must come back to."""
        os.makedirs(self.paths.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.paths.socket_dir, mode=0o700, exist_ok=True)
        write_if_changed(
            self.paths.config,
            render_config(
                self.paths, self.http_bind, self.slot_count, self._slot_servers(routing), routing["health_path"]
            ),
        )
        write_if_changed(self.paths.envs_map, render_map(self._envs_entries(routing)))
        write_if_changed(self.paths.keys_map, render_map(routing["preview_keys"]))

    # process
    def master_pid(self) -> int | None:
        try:
            with open(self.paths.pidfile) as fh:
                pid = int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def running(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        return self.master_pid() is not None and self.api.ping()

    def check_config(self) -> None:
        result = subprocess.run(
            [self.binary, "-c", "-f", self.paths.config], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise HAProxyError(f"HAProxy rejected the config: {(result.stderr or result.stdout).strip()[-800:]}")

    def start(self) -> None:
        """Adopt a running HAProxy (pidfile + admin socket), or start one."""
        with self.lock:
            self.write_files(self.routing)
            if self.request_log.sock is None:
                self.request_log.start()
            if self.master_pid() is not None and self.api.ping():
                log.info("adopted running HAProxy (master pid %s)", self.master_pid())
                self.apply(self.routing)
                return
            self.check_config()
            if not os.path.exists(self.paths.server_state):
                open(self.paths.server_state, "w").close()
            logfile = open(self.paths.log, "ab")
            # Not a new session: HAProxy stays in the node's process group, like the instances.
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-W",
                    "-S",
                    f"{self.paths.master_socket},mode,600",
                    "-f",
                    self.paths.config,
                    "-p",
                    self.paths.pidfile,
                ],
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                close_fds=True,
            )
            logfile.close()
            ok = wait_for(lambda: self.process.poll() is not None or self.api.ping(), 15)
            if not ok or self.process.poll() is not None:
                raise HAProxyError(f"HAProxy did not start: {self._log_tail()}")
            log.info("started HAProxy (master pid %s) on %s", self.process.pid, self.http_bind)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            with open(self.paths.log, errors="replace") as fh:
                return " | ".join(fh.read().splitlines()[-lines:])
        except OSError:
            return "no HAProxy log"

    def reload(self) -> None:
        """Save server states, rewrite the config, reload seamlessly; return once the new
        worker answers on the admin socket."""
        with self.lock:
            self.write_files(self.routing)
            self._reload()

    def _reload(self) -> None:
        self.check_config()
        master = self.master_pid()
        if master is None or not self.api.ping():
            self.start()
            return
        old_worker = self.api.worker_pid()
        state = self.api.show_servers_state()
        write_if_changed(self.paths.server_state, state)
        os.kill(master, signal.SIGUSR2)

        def new_worker() -> bool:
            try:
                pid = self.api.worker_pid()
            except HAProxyError:
                return False
            return pid is not None and pid != old_worker

        if not wait_for(new_worker, 20):
            raise HAProxyError(f"HAProxy did not reload: {self._log_tail()}")
        log.info("reloaded HAProxy (worker %s -> %s)", old_worker, self.api.worker_pid())

    # convergence
    def apply(self, routing: dict, require_healthy: str | None = None) -> dict:
        """Converge HAProxy to ``routing`` (validated); answers once it is applied.

        With ``require_healthy`` (a backend key), nothing changes unless every server of that
        backend is up and passed its last check — checked under the same lock as the commit,
        so a swap cannot route to a server that failed in between."""
        with self.lock:
            if not self.running():
                self.start()
            if require_healthy is not None:
                self._check_healthy(routing, require_healthy)
            reload_needed = routing["health_path"] != self.routing.get("health_path", "/")
            for key in routing["backends"]:
                if key not in self.slots:
                    used = set(self.slots.values())
                    free = [f"slot{i}" for i in range(self.slot_count) if f"slot{i}" not in used]
                    if not free:
                        self.slot_count *= 2
                        reload_needed = True
                        free = [f"slot{i}" for i in range(self.slot_count) if f"slot{i}" not in used]
                    self.slots[key] = free[0]
            previous = self.routing
            self.routing = routing
            # Files first: a reload or restart from here on comes back to the new routing.
            self.write_files(routing)
            self._save()
            if reload_needed:
                self._reload()
            desired = {
                (self.slots[key], server["name"]): server
                for key, servers in routing["backends"].items()
                for server in servers
            }
            actual = self.api.servers()
            unchanged = {
                (self.slots.get(key), server["name"]): server
                for key, servers in previous["backends"].items()
                for server in servers
            }
            added = []
            for (slot, name), server in desired.items():
                row = actual.get((slot, name))
                if (
                    row is not None
                    and unchanged.get((slot, name)) == server
                    and not row.get("status", "").startswith("MAINT")
                ):
                    continue  # as the last apply left it: no runtime API round trips (a swap's fast path)
                if row is None:
                    self.api.add_server(slot, name, server["address"], server["port"])
                    added.append((slot, name))
                    log.info("added server %s/%s %s:%s", slot, name, server["address"], server["port"])
                    continue
                state = parse_servers_state(self.api.execute(f"show servers state {slot}")).get((slot, name), {})
                if state and (state.get("srv_addr"), state.get("srv_port")) != (server["address"], str(server["port"])):
                    self.api.set_server_address(slot, name, server["address"], server["port"])
                    log.info("moved server %s/%s to %s:%s", slot, name, server["address"], server["port"])
                if row.get("status", "").startswith("MAINT"):
                    self.api.enable_server(slot, name)
            if added:
                # New servers take traffic at once; give their first check a moment so a
                # route does not point at a server that has never answered.
                wait_for(
                    lambda: all(
                        self.api.servers().get(s, {}).get("check_status") not in ("INI", "", None) for s in added
                    ),
                    5,
                )
            # Routes: one transaction per map, only when it changes; a swap is one commit.
            for map_path, entries in (
                (self.paths.envs_map, self._envs_entries(routing)),
                (self.paths.keys_map, routing["preview_keys"]),
            ):
                if self.api.show_map(map_path) != entries:
                    self.api.replace_map(map_path, entries)
                    log.info("committed %s (%d entries)", os.path.basename(map_path), len(entries))
            # Retire servers nothing routes to any more: maintenance, drain, delete.
            removed = [
                (slot, name) for (slot, name) in actual if slot.startswith("slot") and (slot, name) not in desired
            ]
            if removed:
                self._retire(removed, float(routing["drain_timeout"]))
            live = {slot for slot, _ in self.api.servers()}
            for key in list(self.slots):
                if key not in routing["backends"] and self.slots[key] not in live:
                    del self.slots[key]
            self._save()
            if previous != routing:
                log.info("routing applied: routes=%s", routing["routes"])
            return self.status()

    def _check_healthy(self, routing: dict, key: str) -> None:
        servers = routing["backends"].get(key) or []
        slot = self.slots.get(key)
        if not servers or slot is None:
            raise Unhealthy(f"backend {key} has no server on this router")
        rows = self.api.servers()
        problems = []
        for server in servers:
            row = rows.get((slot, server["name"]))
            if row is None:
                problems.append(f"{server['name']} is not on this router")
            elif row.get("status") != "UP" or not (row.get("check_status") or "").startswith("L7OK"):
                code = row.get("check_code") or ""
                problems.append(
                    f"{server['name']} is {row.get('status') or 'unknown'} ({row.get('check_status') or 'no check yet'}"
                    + (f", HTTP {code})" if code else ")")
                )
        if problems:
            raise Unhealthy("; ".join(problems))

    def _retire(self, servers: list[tuple[str, str]], drain_timeout: float) -> None:
        for slot, name in servers:
            self.api.disable_server(slot, name)
            log.info("draining server %s/%s", slot, name)
        deadline = time.monotonic() + drain_timeout
        pending = list(servers)
        shut = False
        while pending:
            rows = self.api.servers()
            for slot, name in list(pending):
                row = rows.get((slot, name))
                if row is None:
                    pending.remove((slot, name))
                    continue
                if row.get("scur", "0") in ("0", "") and row.get("qcur", "0") in ("0", ""):
                    try:
                        self.api.del_server(slot, name)
                        pending.remove((slot, name))
                        log.info("deleted server %s/%s", slot, name)
                    except HAProxyError as exc:
                        log.info("server %s/%s not deletable yet: %s", slot, name, exc)
            if not pending:
                break
            if time.monotonic() >= deadline:
                if shut:
                    if time.monotonic() >= deadline + 10:
                        raise HAProxyError(f"could not delete server(s) {pending} after draining")
                else:
                    for slot, name in pending:
                        self.api.shutdown_sessions(slot, name)
                    shut = True
            time.sleep(0.1)

    def metrics(self, window: float = 60.0) -> dict:
        """Per environment: request rate, p50/p95 response time, error rate, live connections."""
        per_slot = self.request_log.summary(window)
        live = {}
        if self.running():
            live = {
                row["pxname"]: int(row.get("scur") or 0)
                for row in self.api.show_stat()
                if row.get("svname") == "BACKEND"
            }
        environments = {}
        for env, key in self.routing["routes"].items():
            slot = self.slots.get(key)
            figures = per_slot.get(slot) or {
                "requests": 0,
                "request_rate": 0.0,
                "p50_ms": None,
                "p95_ms": None,
                "error_rate": 0.0,
            }
            environments[env] = {"version": key, **figures, "live_connections": live.get(slot, 0)}
        return {"window_seconds": window, "environments": environments}

    def status(self) -> dict:
        host, _, port = self.http_bind.rpartition(":")
        running = self.running()
        rows = self.api.servers() if running else {}
        backends = {}
        for key, servers in self.routing["backends"].items():
            slot = self.slots.get(key)
            out = {}
            for server in servers:
                row = rows.get((slot, server["name"]), {})
                code = row.get("check_code") or ""
                out[server["name"]] = {
                    "status": row.get("status") or "ABSENT",
                    "check": row.get("check_status") or None,
                    "check_code": int(code) if code.isdigit() else None,
                    "sessions": int(row.get("scur") or 0),
                    "total": int(row.get("stot") or 0),
                }
            backends[key] = {"slot": slot, "servers": out}
        return {
            "http_port": int(port),
            "running": running,
            "health_path": self.routing["health_path"],
            "routes": self.routing["routes"],
            "preview_keys": self.routing["preview_keys"],
            "backends": backends,
        }
