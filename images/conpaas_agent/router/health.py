"""A server's health checked now, by one request, as HAProxy's own check asks it."""

from __future__ import annotations

import http.client
import socket

from ..platform_requests import PROBE
from .config import CHECK_TIMEOUT, check_passes


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (``path``): the server as HAProxy reaches an instance of its node."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def probe(target: str, path: str, expected: int | None = None, timeout: float = CHECK_TIMEOUT) -> str:
    """GET `path` on the server at ``target`` (address:port, or a unix socket's path, as HAProxy
    reaches it); "" when the answer passes HAProxy's rule (config.check_passes: `expected`, or
    below 500 without one), else why not."""
    if target.startswith("/"):
        connection: http.client.HTTPConnection = UnixHTTPConnection(target, timeout)
    else:
        address, _, port = target.rpartition(":")
        connection = http.client.HTTPConnection(address.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", "User-Agent": PROBE})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        connection.close()
    if check_passes(status, expected):
        return ""
    return f"HTTP {status}" + (f", expected {expected}" if expected is not None else "")
