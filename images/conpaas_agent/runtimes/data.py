"""Data services: a server with a data directory instead of a code version (postgresql.py,
redis.py). Its one instance is the server, its data directory in the instance's directory (kept
across restarts and agent restarts), its port the node's, and its password the control plane's
(spec field ``password``, kept in the node's 0600 state file and in 0600 files of the instance,
never logged).

The servers are run directly (``initdb``/``postgres``, ``redis-server``), as the node's user,
never Debian's cluster or system services (images/stop-services.sh disables those).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import urllib.error
import urllib.request

from .base import InstanceError, Recipe, Run

# Restoring a large database (a base backup, then its WAL) takes long; a PUT that restores waits.
RESTORE_TIMEOUT = 6 * 3600
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def answers_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def validate_address(value: object, field: str) -> dict:
    """`{host, port}` of another server (a master to replicate): an IP address and a port."""
    if not isinstance(value, dict) or set(value) != {"host", "port"}:
        raise InstanceError(f"{field} must be an object with host and port", 400)
    try:
        host = str(ipaddress.ip_address(value["host"]))
    except ValueError:
        raise InstanceError(f"{field}.host must be an IP address", 400) from None
    port = value["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InstanceError(f"{field}.port must be an integer from 1 to 65535", 400)
    return {"host": host, "port": port}


def validate_restore_url(restore: object, what: str) -> dict:
    """A spec's `restore` that names a file behind a presigned URL (an RDB, a SQL dump)."""
    url = restore.get("url") if isinstance(restore, dict) and set(restore) == {"url"} else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 8192:
        raise InstanceError(f"restore must be an object whose url is the http(s) URL of {what}", 400)
    return {"url": url}


def download(url: str, path: str, what: str) -> None:
    """The file behind a presigned URL into `path`, whole or not at all (a partial download is
    removed). The URL is signed: never in an answer or a log."""
    partial = path + ".partial"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
        if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
            reason = str(exc.reason)
        raise InstanceError(f"could not download {what} to restore: {reason}") from None
    os.replace(partial, path)


def private_file(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


class DataRecipe(Recipe):
    """A server with a data directory instead of a code version (``Instances`` stages nothing)."""

    archive = False
    fields = frozenset({"password", "port"})
    concurrency = 100

    def validate(self, body: dict) -> dict:
        # The control plane generates it (secrets.token_urlsafe): a shape no config file can bend.
        password = body.get("password")
        if not isinstance(password, str) or not _PASSWORD_RE.match(password):
            raise InstanceError("password is required: 16 to 128 letters, digits, '-' or '_'", 400)
        spec = {"password": password}
        # A server rebuilt on a new node keeps the dead one's address and port: its clients'
        # URLs stay right (the control plane's self-healing asks for the port it had).
        port = body.get("port")
        if port is not None:
            if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
                raise InstanceError("port must be an integer from 1024 to 65535", 400)
            spec["port"] = port
        return spec

    def ready(self, run: Run) -> bool:
        return self.accepts(run.host, run.port)

    def healthy(self, host: str, port: int, path: str) -> dict:
        ok = self.accepts(host, port)
        return {"ok": ok, "status": None, "detail": "accepts connections" if ok else "refuses connections"}

    def accepts(self, host: str, port: int) -> bool:
        return answers_tcp(host, port)

    def refuse_root(self) -> None:
        if os.geteuid() == 0:
            raise InstanceError(f"{self.name} does not run as root: run the platform with isolation (README)")
