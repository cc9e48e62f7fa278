"""Processes and ports on this host, from ``/proc`` (Linux): shared by the agent, the local
cloud driver, the tests and the benchmarks. Standard library only."""

from __future__ import annotations

import os
import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which has exited and only waits to be reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        pass
    return True


def stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: [state, ppid, pgrp, …, utime (11), stime
    (12), …]; None when the process is gone. The name is skipped by its closing parenthesis,
    since it may itself hold spaces and parentheses."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> str:
    """The command line of `pid`, arguments joined by spaces ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _live_where(field: int, value: int) -> list[int]:
    """Live (non-zombie) processes whose stat field number `field` equals `value`."""
    found = []
    for pid in all_pids():
        fields = stat_fields(pid)
        if fields is not None and fields[0] != "Z" and int(fields[field]) == value:
            found.append(pid)
    return found


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`."""
    return _live_where(1, pid)


def group_members(pgid: int) -> list[int]:
    """Live processes of the process group `pgid`."""
    return _live_where(2, pgid)
