"""tcp_router: a replicated data service's one address. HAProxy in TCP mode on the router node
sends each connection of the service's port to the member that is its primary now, and each
connection of its replica port to a replica (to the primary when no replica is up), as the
members' own health checks say: any client library works unchanged, with one host and one port.

Members come and go through HAProxy's runtime API, never a restart: the config declares
``MAX_MEMBERS`` slots per backend, disabled; a member put into a slot starts DOWN and takes
connections once its check passes, so a new replica never receives a write, and a member taken
out has its connections shut. The config file holds the members too, so a restart comes back
the same (its slots again DOWN until checked).

A mysql member (Galera) is checked on its galera_check port: every synced member passes for both
backends, and the primary backend sends every connection to the first of them (``balance first``):
writes go to one member at a time, so concurrent writes to the same rows do not fail Galera's
certification on two members; reads spread over all.

A redis member is checked with its own protocol (AUTH, INFO replication: ``role:master`` for
the primary backend, ``role:slave`` with its link up for the replicas), every 500 ms, every
250 ms while down: a failover Sentinel makes is followed within about a quarter of a second.
"""

from __future__ import annotations

import os
import re
import time

from conpaas_common.procs import free_port
from conpaas_common.wire import MAX_REPLICATED_SERVERS

from ..router.runtime_api import HAProxyError, RuntimeAPI
from .base import InstanceError, Recipe, Run, installed, server_socket
from .data import _PASSWORD_RE, answers_tcp, private_file, validate_address

HAPROXY = "/usr/sbin/haproxy"
MAX_MEMBERS = MAX_REPLICATED_SERVERS
ENGINES = ("redis", "postgresql", "mysql")
# Engines whose members answer an HTTP check on their own check_port (Patroni's REST API, galera_check).
HTTP_CHECKED = ("postgresql", "mysql")
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CHECK = "check inter 500ms downinter 250ms fastinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions"
# Database connections are long-lived (pools): an idle one is not cut for an hour.
TIMEOUTS = "timeout connect 3s\n    timeout client 1h\n    timeout server 1h\n    timeout check 2s\n"


def _http_checks(path: str) -> str:
    # Each member's Patroni answers 200 on /primary only for the primary, on /replica only for a
    # running standby; galera_check on / for a synced member: the server's check port. Its
    # answer is read whole (up to the JSON's closing brace): a check that hung up after the
    # status line would make Patroni log a broken pipe, twice a second per member.
    lines = [
        "option tcp-check",
        "tcp-check connect",
        f'tcp-check send "GET {path} HTTP/1.0\\r\\n\\r\\n"',
        'tcp-check expect rstring "(?s)^HTTP/1[.][01] 200 .*[}]"',
    ]
    return "".join(f"    {line}\n" for line in lines)


def _redis_checks(password: str, expect: str) -> str:
    # QUIT goes with INFO: the server closes the connection after its answer, so a check that
    # does not find what it expects fails at once rather than at its timeout.
    lines = ["option tcp-check", "tcp-check connect", f"tcp-check send AUTH\\ {password}\\r\\n"]
    lines += ["tcp-check expect string +OK", "tcp-check send INFO\\ replication\\r\\nQUIT\\r\\n"]
    lines += [f"tcp-check expect string {expect}"]
    return "".join(f"    {line}\n" for line in lines)


PRIMARY, REPLICAS = "primary", "replicas"
# (backend, slot prefix, what its check expects): a replica alone says `master_link_status`;
# the replicas' backend falls back to the primary (its `backup` slots track the primary's).
SLOTS = (
    (PRIMARY, "m", "role:master"),
    (REPLICAS, "r", "master_link_status:up"),
    (REPLICAS, "b", None),
)
CHECK_PATHS = {
    "postgresql": {"role:master": "/primary", "master_link_status:up": "/replica"},
    "mysql": {"role:master": "/", "master_link_status:up": "/"},
}


class TcpRouter(Recipe):
    name = "tcp_router"
    archive = False
    fields = frozenset({"engine", "password", "port", "replica_port", "members"})
    concurrency = 10000
    start_timeout = 15.0

    def validate(self, body: dict) -> dict:
        engine = body.get("engine")
        if engine not in ENGINES:
            raise InstanceError(f"engine must be one of {', '.join(ENGINES)}", 400)
        password = body.get("password")
        if not isinstance(password, str) or not _PASSWORD_RE.match(password):
            raise InstanceError("password is required: 16 to 128 letters, digits, '-' or '_'", 400)
        spec = {"engine": engine, "password": password, "members": self._members(body.get("members"))}
        if engine in HTTP_CHECKED and any("check_port" not in member for member in spec["members"]):
            raise InstanceError(f"a {engine} member needs its check_port (Patroni's REST API, galera_check)", 400)
        for field in ("port", "replica_port"):
            value = body.get(field)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= 65535:
                    raise InstanceError(f"{field} must be an integer from 1024 to 65535", 400)
                spec[field] = value
        return spec

    @staticmethod
    def _members(members: object) -> list[dict]:
        if not isinstance(members, list) or len(members) > MAX_MEMBERS:
            raise InstanceError(f"members must be a list of at most {MAX_MEMBERS} servers", 400)
        clean, names = [], set()
        for member in members:
            name = member.get("name") if isinstance(member, dict) else None
            if not isinstance(name, str) or not NAME_RE.match(name) or name in names:
                raise InstanceError(f"each member needs a name of its own matching {NAME_RE.pattern}", 400)
            names.add(name)
            address = validate_address({k: member.get(k) for k in ("host", "port")}, f"member {name}")
            check_port = member.get("check_port")
            if check_port is not None:
                check_port = validate_address({"host": address["host"], "port": check_port}, f"member {name}")["port"]
                address["check_port"] = check_port
            clean.append({"name": name, **address})
        return sorted(clean, key=lambda m: m["name"])

    # --- running ---------------------------------------------------------------------------

    def start(self, run: Run) -> None:
        haproxy = installed(HAPROXY, "HAProxy", "redis")
        replica_port = run.spec.get("replica_port") or free_port(run.host)
        run.spec = {**run.spec, "replica_port": replica_port}
        members = self._placed(run.spec["members"], {})
        self._write(run.dir, run.host, run.port, replica_port, run.spec, members)
        run.spawn([haproxy, "-db", "-f", run.path("haproxy.cfg")])
        self._await_socket(run)
        self._apply(run.dir, {}, members)

    def _await_socket(self, run: Run) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not os.path.exists(admin_socket(run.dir)):
            if any(process.poll() is not None for process in run.processes) or time.monotonic() > deadline:
                return  # the manager says why (the process's exit, or its timeout)
            time.sleep(0.02)

    def ready(self, run: Run) -> bool:
        return answers_tcp(run.host, run.port)

    def healthy(self, host: str, port: int, path: str) -> dict:
        ok = answers_tcp(host, port)
        return {"ok": ok, "status": None, "detail": "accepts connections" if ok else "refuses connections"}

    def details(self, run: Run) -> dict:
        return {"replica_port": run.spec["replica_port"], "slots": self._placed(run.spec["members"], {})}

    def replication(self, directory: str, host: str, port: int, record: dict) -> dict:
        """Where the router sends connections now, as its checks say: the primary's member name
        (None while no member passes as one) and the replicas'."""
        try:
            stats = RuntimeAPI(admin_socket(directory), timeout=5).execute("show stat")
        except HAProxyError as exc:
            return {"role": "router", "primary": None, "replicas": [], "detail": str(exc)}
        slots = record.get("details", {}).get("slots", {})
        up: dict[str, list[str]] = {PRIMARY: [], REPLICAS: []}
        for line in stats.splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] in up and fields[17] == "UP" and fields[1][:1] in "mr":
                member = slots.get(fields[1][1:])
                if member:
                    up[fields[0]].append(member["name"])
        # Galera: every synced member passes, and `balance first` takes the lowest slot.
        first = record.get("engine") == "mysql" and up[PRIMARY]
        primary = up[PRIMARY][0] if len(up[PRIMARY]) == 1 or first else None
        return {"role": "router", "primary": primary, "replicas": sorted(up[REPLICAS])}

    def reconfigure(self, directory: str, host: str, record: dict, spec: dict) -> dict | None:
        """Take the spec's members without a restart (the runtime API); returns the record's new
        details, or None when something else changed (the instance is started again)."""
        keep = ("engine", "password")
        if any(record.get(field) != spec.get(field) for field in keep):
            return None
        if spec.get("replica_port") not in (None, record["details"].get("replica_port")):
            return None
        before = record["details"].get("slots", {})
        members = self._placed(spec["members"], before)
        replica_port = record["details"]["replica_port"]
        self._write(directory, host, record["port"], replica_port, spec, members)
        try:
            self._apply(directory, before, members)
        except HAProxyError as exc:
            raise InstanceError(f"the router did not take its members: {exc}", 502) from None
        return {"replica_port": replica_port, "slots": members}

    @staticmethod
    def _placed(members: list[dict], before: dict) -> dict:
        """Slot number (1..MAX_MEMBERS, as a string) → member; a member keeps the slot it had,
        so its check's state and its connections stay."""
        slots = {slot: member for slot, member in before.items() if member in members}
        free = [str(n) for n in range(1, MAX_MEMBERS + 1) if str(n) not in slots]
        for member in members:
            if member not in slots.values():
                slots[free.pop(0)] = member
        return dict(sorted(slots.items()))

    def _write(self, directory: str, host: str, port: int, replica_port: int, spec: dict, members: dict) -> None:
        password = spec["password"]
        backends = {}
        engine = spec["engine"]
        for backend, _prefix, expect in SLOTS:
            balance = "first" if engine == "mysql" and backend == PRIMARY else "roundrobin"
            text = backends.setdefault(backend, [f"backend {backend}\n    mode tcp\n    balance {balance}\n"])
            if expect:
                checks = _http_checks(CHECK_PATHS[engine][expect]) if engine in HTTP_CHECKED else None
                text.append(checks or _redis_checks(password, expect))
        lines = [
            "global\n",
            f"    stats socket {admin_socket(directory)} mode 600 level admin\n",
            "    log stderr format short local0 notice\n",
            "defaults\n    mode tcp\n    log global\n",
            f"    {TIMEOUTS}",
            f"frontend {PRIMARY}\n    bind {host}:{port}\n    default_backend {PRIMARY}\n",
            f"frontend {REPLICAS}\n    bind {host}:{replica_port}\n    default_backend {REPLICAS}\n",
        ]
        for backend, prefix, _expect in SLOTS:
            for n in range(1, MAX_MEMBERS + 1):
                member = members.get(str(n))
                where = f"{member['host']}:{member['port']}" if member else "127.0.0.1:1"
                extra = " backup" if prefix == "b" else ""
                if member and member.get("check_port") and prefix != "b":
                    extra += f" port {member['check_port']}"
                # The backup slots are checked as primaries, with the primary backend's rules.
                track = f" track {PRIMARY}/m{n}" if prefix == "b" else f" {CHECK}"
                backends[backend].append(f"    server {prefix}{n} {where}{track}{extra} disabled\n")
        text = "".join(lines) + "".join("".join(parts) for parts in backends.values())
        # The password is in the checks: the file is the node user's alone.
        private_file(os.path.join(directory, "haproxy.cfg"), text)

    @staticmethod
    def _apply(directory: str, before: dict, after: dict) -> None:
        """Slots whose member changed: out of rotation (their sessions shut) or in, DOWN until
        their check passes (in one request, as HAProxy 2.6 needs: router/runtime_api.py)."""
        commands = []
        for n in range(1, MAX_MEMBERS + 1):
            old, new = before.get(str(n)), after.get(str(n))
            if old == new:
                continue
            for backend, prefix, _expect in SLOTS:
                server = f"{backend}/{prefix}{n}"
                commands += [f"disable server {server}", f"shutdown sessions server {server}"]
            if new:
                for backend, prefix, expect in SLOTS:
                    server = f"{backend}/{prefix}{n}"
                    commands.append(f"set server {server} addr {new['host']} port {new['port']}")
                    if new.get("check_port") and expect:
                        commands.append(f"set server {server} check-port {new['check_port']}")
                for backend, prefix, expect in SLOTS:
                    server = f"{backend}/{prefix}{n}"
                    commands.append(f"enable server {server}")
                    if expect:
                        commands.append(f"set server {server} health down")
        if commands:
            answer = RuntimeAPI(admin_socket(directory)).execute(";".join(commands))
            refused = [line for line in answer.splitlines() if line.strip() and not _harmless(line)]
            if refused:
                raise HAProxyError("; ".join(refused[:3]))

    def marker(self, run: Run) -> str:
        return run.path("haproxy.cfg")


def _harmless(line: str) -> bool:
    """What HAProxy answers to a command that did what was asked."""
    return line.startswith(("IP changed", "no need to change", "port changed")) or "changed from" in line


def admin_socket(directory: str) -> str:
    """The runtime API's socket (base.server_socket)."""
    return server_socket(directory, "admin.sock")
