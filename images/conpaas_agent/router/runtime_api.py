"""The HAProxy runtime API client: the admin stats socket, one request per connection.

Verified against HAProxy 2.6.12:
- ``add server slotK/NAME ADDR:PORT check inter 1s downinter 100ms fall 2 rise 1 observe layer4
  error-limit 2 on-error mark-down maxconn N`` works on a ``balance roundrobin`` backend; the new server
  starts in maintenance with checks disabled, so ``enable health`` then ``enable server`` must
  follow. It takes traffic (state UP) right after ``enable server``, before its first check has
  run (2.6 has no ``init-state``), unless ``set server … health down`` follows in the same
  request: then it is DOWN until a check passes. ``set server … health down`` while still in
  maintenance is undone by ``enable server``. Its first check runs ``downinter`` after ``enable
  health`` (``inter`` without it).
- ``http-after-response set-var(proc.X)`` counts, and ``get var proc.X`` answers
  ``proc.X: type=sint value=<N>`` (``Variable not found.`` before the first count).
- ``del server`` works for dynamic and for config-declared servers, but only in maintenance
  ("Only servers in maintenance mode can be deleted."); it is refused while the server still
  has sessions or queued requests.
- ``prepare map FILE`` answers ``New version created: N``; ``add map @N FILE KEY VALUE`` and
  ``commit map @N FILE`` work, and the commit switches the whole map at once.
- Several commands on one line (``;``-separated) each run and answer, in order, each answer
  ending with an empty line: a command that fails answers its error and the next ones still
  run. A successful ``add map`` answers just that empty line, so N of them answer exactly N
  newlines (tried up to 700 commands, 29 kB on one line). Under CPU saturation a request costs
  a wakeup of HAProxy and of the agent: one line of N commands costs one, N lines N, and
  ``prompt`` (interactive mode, one connection) still one per command.
- SIGUSR2 to the master reloads; the new worker takes over the admin socket, so
  ``show info``'s ``Pid`` changes once the new worker runs.
"""

from __future__ import annotations

import re
import socket

from .config import QUEUE_TIMEOUTS_VAR, server_options

VAR_ANSWER_RE = re.compile(r"^(proc\.[A-Za-z0-9_.]+): type=\w+ value=<(-?\d+)>$")


class HAProxyError(Exception):
    """HAProxy refused a command, did not answer, or failed to start or reload."""


class RuntimeAPI:
    """The admin stats socket (``level admin``): one request per connection (one command, or
    several separated by ``;``)."""

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
        return _parse_info(self.execute("show info"))

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
        """One transaction: ``prepare map``, the entries' ``add map @V`` in one request (a few
        for a large map), ``commit map @V`` only once every add answered that it succeeded. An
        uncommitted version changes nothing; the next commit of the map discards it."""
        answer = self._expect(f"prepare map {map_path}", ("New version created:",))
        version = answer.rsplit(":", 1)[1].strip()
        if not version.isdigit():
            raise HAProxyError(f"HAProxy answered an unexpected map version: {answer}")
        adds = [f"add map @{version} {map_path} {key} {value}" for key, value in entries.items()]
        for batch in _batches(adds):
            # Exactly one empty answer per command: none failed, and none went unread.
            if (answer := self.execute(";".join(batch))) != "\n" * len(batch):
                refused = next((line for line in answer.splitlines() if line.strip()), "no answer")
                raise HAProxyError(f"HAProxy refused to fill {map_path} version {version}: {refused}")
        self._expect(f"commit map @{version} {map_path}")

    # servers
    def add_server(self, backend: str, name: str, target: str, maxconn: int | None = None) -> None:
        """Add a server (``target``: address:port, or a unix socket's path) that takes requests
        only once its first health check passed."""
        server = f"{backend}/{name}"
        self._expect(f"add server {server} {target} {server_options(maxconn)}", ("New server registered",))
        # One request: HAProxy runs one thread and this one CLI request to its end, so no request
        # is routed to the server between "enable server" (UP) and "health down".
        self._expect(f"enable health {server};enable server {server};set server {server} health down")

    def set_server_maxconn(self, backend: str, name: str, maxconn: int | None) -> None:
        self._expect(f"set maxconn server {backend}/{name} {maxconn or 0}")  # 0: no limit

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
        return _parse_stat(self.execute("show stat").splitlines())

    def info_and_stat(self, slots: list[str] | None = None) -> tuple[dict[str, str], list[dict[str, str]]]:
        """``show info``, ``show stat`` and each slot's queue-timeout counter in one request
        (``;``-separated commands, one connection): every answer comes from the same worker,
        even across a reload. The counter is added to the slot's BACKEND row as
        ``queue_timeouts``."""
        counters = {QUEUE_TIMEOUTS_VAR.format(slot=slot): slot for slot in slots or []}
        command = ";".join(["show info", "show stat", *(f"get var {name}" for name in counters)])
        lines = self.execute(command).splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("# pxname")), None)
        if start is None:
            raise HAProxyError(f"HAProxy answered {command[:40]} unexpectedly: {lines[:1]}")
        # Each answer ends with an empty line: the stat table first, then the counters.
        end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
        counted = {}
        for line in lines[end:]:
            if match := VAR_ANSWER_RE.match(line):
                counted[counters.get(match.group(1))] = match.group(2)
        rows = _parse_stat(lines[start:end])
        for row in rows:
            if row.get("svname") == "BACKEND" and row.get("pxname") in counters.values():
                row["queue_timeouts"] = counted.get(row["pxname"], "0")
        return _parse_info("\n".join(lines[:start])), rows

    def servers(self) -> dict[tuple[str, str], dict[str, str]]:
        """(backend, server) -> stat row, servers only (no FRONTEND/BACKEND rows)."""
        return server_rows(self.show_stat())

    def worker_and_servers(self) -> tuple[str | None, dict[tuple[str, str], dict[str, str]]]:
        """The worker's pid (``show info``) and ``servers()`` in one request: both from the same
        worker, even across a reload."""
        info, rows = self.info_and_stat()
        return info.get("Pid"), server_rows(rows)


# The guide bounds a CLI request by tune.bufsize (16 kB by default); 2.6.12 read longer lines
# whole, but a map's fill stays well below it.
MAX_REQUEST_CHARS = 8000


def _batches(commands: list[str]) -> list[list[str]]:
    """``commands`` in as few ``;``-joined requests as stay under MAX_REQUEST_CHARS."""
    batches: list[list[str]] = []
    size = MAX_REQUEST_CHARS
    for command in commands:
        if ";" in command or "\\" in command:  # HAProxy would split or unescape it
            raise HAProxyError(f"a runtime API command in a batch cannot hold ';' or '\\': {command}")
        if size + len(command) + 1 > MAX_REQUEST_CHARS:
            batches.append([])
            size = 0
        batches[-1].append(command)
        size += len(command) + 1
    return batches


def server_rows(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """``show stat`` rows -> (backend, server) -> row, servers only."""
    return {
        (row["pxname"], row["svname"]): row
        for row in rows
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("type") == "2"
    }


def _parse_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _parse_stat(lines: list[str]) -> list[dict[str, str]]:
    if not lines or not lines[0].startswith("# "):
        raise HAProxyError(f"HAProxy answered show stat unexpectedly: {lines[:1]}")
    header = lines[0][2:].split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line.strip()]


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


def server_healthy(row: dict[str, str]) -> bool:
    """The one health verdict on a server's stat row: up, and it passed its last HTTP check.

    The agent gates a swap on it and reports it in its proxy status, so the control plane
    never re-derives it."""
    # "* " marks a check under way; what follows is the last result (and check_code reads 0 then).
    last_check = (row.get("check_status") or "").removeprefix("* ")
    return row.get("status") == "UP" and last_check.startswith("L7OK")
