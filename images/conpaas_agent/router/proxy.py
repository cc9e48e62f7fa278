"""The proxy role of a node: HAProxy as a process (master-worker, seamless reload) and the
convergence of the desired routing through the runtime API, with no reload."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from conpaas_common.procs import pid_alive
from conpaas_common.waiting import wait_until
from conpaas_common.wire import NO_REQUESTS

from ..metrics import LOG_SAMPLE, RequestLog
from .config import Paths, render_config, render_map, write_if_changed
from .health import probe
from .runtime_api import HAProxyError, RuntimeAPI, parse_servers_state, server_healthy
from .validation import EMPTY_ROUTING

log = logging.getLogger("conpaas_agent.router")

INITIAL_SLOTS = 8
# How long a server that changes between a unix socket and TCP may drain before it is replaced.
DRAIN_ON_REPLACE = 5.0


class Unhealthy(Exception):
    """A gated change was refused: the servers it needs are not passing their health checks."""


class Proxy:
    """The proxy role of one node.

    ``state`` (persisted by the caller through ``save``) holds the last desired routing, the
    slot of each version backend and the number of slot backends.
    """

    def __init__(
        self,
        home: str,
        http_bind: str,
        state: dict | None,
        save,
        binary: str | None = None,
        local_socket: Callable[[str, int], str | None] | None = None,
    ):
        self.paths = Paths(os.path.join(home, "haproxy"))
        self.http_bind = http_bind
        self.binary = binary or os.environ.get("CONPAAS_HAPROXY") or "/usr/sbin/haproxy"
        state = state or {}
        # Over the defaults: a routing saved by an older agent lacks the fields added since.
        self.routing: dict = {**EMPTY_ROUTING, **(state.get("routing") or {})}
        self.slots: dict[str, str] = dict(state.get("slots") or {})  # version key -> slotK
        self.slot_count: int = int(state.get("slot_count") or INITIAL_SLOTS)
        self._save = save
        # (address, port) -> the unix socket of this node's instance there, or None (instances.py)
        self.local_socket = local_socket or (lambda address, port: None)
        self.api = RuntimeAPI(self.paths.admin_socket)
        self.lock = threading.RLock()
        self.process: subprocess.Popen | None = None
        # What this process last committed to each map, and to which worker: a swap then
        # commits without reading the map first. Dropped whenever the worker may have changed
        # (start, reload, another pid), so it never stands for a map HAProxy does not hold.
        self._committed_maps: dict[str, dict[str, str]] = {}
        self._maps_worker: str | None = None
        self.request_log = RequestLog(self.paths.request_log, stats=self._counters, sample=LOG_SAMPLE)

    def _counters(self) -> tuple[dict[str, str], list[dict[str, str]]]:
        """HAProxy's counters for the request log: ``show info``, ``show stat`` and every
        slot's queue timeouts."""
        return self.api.info_and_stat([f"slot{index}" for index in range(self.slot_count)])

    # state
    def state(self) -> dict:
        return {"routing": self.routing, "slots": dict(self.slots), "slot_count": self.slot_count}

    def target(self, server: dict) -> str:
        """Where HAProxy connects for ``server``: the unix socket of an instance on this node that
        has one, else its address and port."""
        return self.local_socket(server["address"], server["port"]) or f"{server['address']}:{server['port']}"

    def _slot_servers(self, routing: dict, only: set | None = None) -> dict[str, list[dict]]:
        """slot -> its servers, each with its ``target``; with ``only``, just the (slot, name)
        pairs it holds."""
        return {
            self.slots[key]: [
                {**s, "target": self.target(s)} for s in servers if only is None or (self.slots[key], s["name"]) in only
            ]
            for key, servers in routing["backends"].items()
            if key in self.slots
        }

    def _envs_entries(self, routing: dict) -> dict[str, str]:
        return {env: self.slots[key] for env, key in routing["routes"].items()}

    def write_files(self, routing: dict, only: set | None = None) -> None:
        """Config and maps for ``routing``: what a reload or a restart must come back to (with
        ``only``, just those of its servers)."""
        os.makedirs(self.paths.dir, mode=0o700, exist_ok=True)
        os.makedirs(self.paths.socket_dir, mode=0o700, exist_ok=True)
        write_if_changed(
            self.paths.config,
            render_config(
                self.paths,
                self.http_bind,
                self.slot_count,
                self._slot_servers(routing, only),
                routing["health_path"],
                routing["health_status"],
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
        return self._master_alive() and self.api.ping()

    def _master_alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            return False
        return self.master_pid() is not None

    def _worker_and_servers(self) -> tuple[str | None, dict] | None:
        """As ``running()``, in the same one request as the servers' rows: (worker pid, rows),
        or None when HAProxy does not run."""
        if not self._master_alive():
            return None
        try:
            return self.api.worker_and_servers()
        except HAProxyError:
            return None

    def _forget_maps(self, worker: str | None = None) -> None:
        self._committed_maps.clear()
        self._maps_worker = worker

    def check_config(self) -> None:
        result = subprocess.run(
            [self.binary, "-c", "-f", self.paths.config], capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            raise HAProxyError(f"HAProxy rejected the config: {(result.stderr or result.stdout).strip()[-800:]}")

    def start(self) -> None:
        """Adopt a running HAProxy (pidfile + admin socket), or start one."""
        with self.lock:
            self._forget_maps()
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
            ok = wait_until(lambda: self.process.poll() is not None or self.api.ping(), 15)
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
        self._forget_maps()
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

        if not wait_until(new_worker, 20):
            raise HAProxyError(f"HAProxy did not reload: {self._log_tail()}")
        log.info("reloaded HAProxy (worker %s -> %s)", old_worker, self.api.worker_pid())

    # convergence
    def apply(self, routing: dict, require_healthy: str | None = None) -> dict:
        """Converge HAProxy to ``routing`` (validated); answers once it is applied.

        With ``require_healthy`` (a backend key), nothing changes unless every server of that
        backend is up and passed its last check — checked under the same lock as the commit,
        so a swap cannot route to a server that failed in between."""
        with self.lock:
            # One request answers whether HAProxy runs, which worker, and its servers: nothing
            # but this apply changes them until it returns (reloads and starts take the lock).
            seen = self._worker_and_servers()
            if seen is None:
                self.start()
                seen = self.api.worker_and_servers()
            worker, rows = seen
            if worker is None or worker != self._maps_worker:
                self._forget_maps(worker)
            if require_healthy is not None:
                self._check_healthy(routing, require_healthy, rows)
            health_check_changed = (routing["health_path"], routing["health_status"]) != (
                self.routing["health_path"],
                self.routing["health_status"],
            )
            slots_grew = self._assign_slots(routing)
            previous, self.routing = self.routing, routing
            self._save()
            if health_check_changed or slots_grew:
                # A server the new worker reads in the config is UP before any check (2.6 has no
                # init-state): reload with the servers HAProxy has, add the new ones after, down
                # until their first check passes, as at any other change.
                self.write_files(routing, only=set(rows))
                self._reload()
                rows = self.api.servers()
            # Files before the runtime changes: a reload or restart from here on comes back to the
            # new routing.
            self.write_files(routing)
            desired = self._servers_by_slot(routing)
            changed = self._converge_servers(desired, rows, last_applied=self._servers_by_slot(previous))
            self._await_first_checks(changed.added)
            self._commit_maps(routing)
            removed = self._retire_unrouted(desired, rows, float(routing["drain_timeout"]))
            if changed.added or changed.updated or removed:
                rows = self.api.servers()
            # else (a swap's fast path): the rows read at the start are still HAProxy's servers
            if self._release_slots(routing, rows):
                self._save()
            # else the state is as saved above: one state file write less (a swap's fast path)
            if previous != routing:
                log.info("routing applied: routes=%s", routing["routes"])
            return self._status(True, rows)

    def _assign_slots(self, routing: dict) -> bool:
        """Give each new version backend a free slot; True when the slots had to grow (a reload).

        A slot freed by a retired version is reused: its request metrics start afresh, so the
        new version's figures never include the old version's traffic."""
        grew = False
        assigned = []
        for key in routing["backends"]:
            if key not in self.slots:
                used = set(self.slots.values())
                free = [f"slot{i}" for i in range(self.slot_count) if f"slot{i}" not in used]
                if not free:
                    self.slot_count *= 2
                    grew = True
                    free = [f"slot{i}" for i in range(self.slot_count) if f"slot{i}" not in used]
                self.slots[key] = free[0]
                assigned.append(free[0])
        if assigned:
            self.request_log.restart(assigned)
        return grew

    def _servers_by_slot(self, routing: dict) -> dict[tuple[str | None, str], dict]:
        """(slot, server name) -> server, for every server of ``routing``."""
        return {
            (self.slots.get(key), server["name"]): server
            for key, servers in routing["backends"].items()
            for server in servers
        }

    def _converge_servers(self, desired: dict, actual: dict, last_applied: dict) -> ServerChanges:
        """Add the missing servers, move or re-enable the changed ones."""
        changed = ServerChanges([], [])
        for (slot, name), server in desired.items():
            row = actual.get((slot, name))
            if row is None:
                target = self.target(server)
                self.api.add_server(slot, name, target, server.get("maxconn"))
                changed.added.append((slot, name))
                log.info("added server %s/%s %s", slot, name, target)
            elif last_applied.get((slot, name)) != server or _in_maintenance(row):
                self._update_server(slot, name, server, row)
                changed.updated.append((slot, name))
            # else: as the last apply left it, no runtime API round trip (a swap's fast path)
        return changed

    def _update_server(self, slot: str, name: str, server: dict, row: dict) -> None:
        state = parse_servers_state(self.api.execute(f"show servers state {slot}")).get((slot, name), {})
        target = self.target(server)
        # A unix socket server shows as "-" port 0; the runtime API moves a server between
        # addresses and ports only, so a server that changes kind is replaced.
        current = "unix" if state.get("srv_addr") == "-" else f"{state.get('srv_addr')}:{state.get('srv_port')}"
        wanted = "unix" if target.startswith("/") else target
        if state and current != wanted:
            if "unix" in (current, wanted):
                self._retire([(slot, name)], DRAIN_ON_REPLACE)
                self.api.add_server(slot, name, target, server.get("maxconn"))
                log.info("replaced server %s/%s by %s", slot, name, target)
                return
            self.api.set_server_address(slot, name, server["address"], server["port"])
            log.info("moved server %s/%s to %s", slot, name, target)
        if (row.get("slim") or "0") != str(server.get("maxconn") or 0):  # "" or 0: no limit
            self.api.set_server_maxconn(slot, name, server.get("maxconn"))
            log.info("server %s/%s takes %s requests at once", slot, name, server.get("maxconn") or "any number of")
        if _in_maintenance(row):
            self.api.enable_server(slot, name)

    def _await_first_checks(self, added: list[tuple[str, str]]) -> None:
        """New servers take no request before their first check passes (RuntimeAPI.add_server);
        give it a moment so a route does not point at servers that are all still down (no error
        when it takes longer)."""

        def checked() -> bool:  # "* INI": the first check is under way, not done
            rows = self.api.servers()
            return all((rows.get(s, {}).get("check_status") or "").removeprefix("* ") not in ("INI", "") for s in added)

        if added:
            wait_until(checked, 5)

    def _commit_maps(self, routing: dict) -> None:
        """One transaction per map, only when it changes: a swap is one commit. A map is read
        only when this process does not know what the current worker holds."""
        for map_path, entries in (
            (self.paths.envs_map, self._envs_entries(routing)),
            (self.paths.keys_map, routing["preview_keys"]),
        ):
            held = self._committed_maps.pop(map_path, None)  # unknown until this map is done
            if held is None:
                held = self.api.show_map(map_path)
            if held != entries:
                self.api.replace_map(map_path, entries)
                log.info("committed %s (%d entries)", os.path.basename(map_path), len(entries))
            self._committed_maps[map_path] = dict(entries)

    def _retire_unrouted(self, desired: dict, actual: dict, drain_timeout: float) -> list[tuple[str, str]]:
        """Servers nothing routes to any more: maintenance, drain, delete; returns them."""
        removed = [(slot, name) for (slot, name) in actual if slot.startswith("slot") and (slot, name) not in desired]
        if removed:
            self._retire(removed, drain_timeout)
        return removed

    def _release_slots(self, routing: dict, rows: dict) -> bool:
        """Free the slots of version backends that left the routing and have no server left
        (``rows``: HAProxy's servers now); True when it freed any."""
        live = {slot for slot, _ in rows}
        released = [key for key, slot in self.slots.items() if key not in routing["backends"] and slot not in live]
        for key in released:
            del self.slots[key]
        return bool(released)

    def _check_healthy(self, routing: dict, key: str, rows: dict) -> None:
        """``rows``: HAProxy's servers, read under the lock this apply holds."""
        servers = routing["backends"].get(key) or []
        slot = self.slots.get(key)
        if not servers or slot is None:
            raise Unhealthy(f"backend {key} has no server on this router")
        problems = []
        for server in servers:
            row = rows.get((slot, server["name"]))
            if row is None:
                problems.append(f"{server['name']} is not on this router")
            elif not server_healthy(row):
                code = row.get("check_code") or ""
                problems.append(
                    f"{server['name']} is {row.get('status') or 'unknown'} ({row.get('check_status') or 'no check yet'}"
                    + (f", HTTP {code})" if code else ")")
                )
            # HAProxy's verdict is as old as its last check (up to a second or two): a server that
            # died since still looks UP. One request now closes that window before the commit.
            elif failure := probe(self.target(server), routing["health_path"], routing["health_status"]):
                problems.append(f"{server['name']} does not answer its health check now ({failure})")
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
        """Per environment: request rate, p50/p95 response time, error rate, requests answered 503
        at the queue timeout, live connections."""
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
            figures = per_slot.get(slot) or NO_REQUESTS
            environments[env] = {"version": key, **figures, "live_connections": live.get(slot, 0)}
        return {"window_seconds": window, "environments": environments}

    def status(self) -> dict:
        seen = self._worker_and_servers()
        return self._status(seen is not None, seen[1] if seen is not None else {})

    def _status(self, running: bool, rows: dict) -> dict:
        host, _, port = self.http_bind.rpartition(":")
        backends = {}
        for key, servers in self.routing["backends"].items():
            slot = self.slots.get(key)
            out = {}
            for server in servers:
                row = rows.get((slot, server["name"]), {})
                code = row.get("check_code") or ""
                out[server["name"]] = {
                    "healthy": server_healthy(row),
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
            "health_status": self.routing["health_status"],
            "routes": self.routing["routes"],
            "preview_keys": self.routing["preview_keys"],
            "backends": backends,
        }


class ServerChanges(NamedTuple):
    """What converging the servers did: the (slot, name) of those it added and of those it updated."""

    added: list[tuple[str, str]]
    updated: list[tuple[str, str]]


def _in_maintenance(row: dict[str, str]) -> bool:
    return row.get("status", "").startswith("MAINT")
