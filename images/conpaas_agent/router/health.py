"""A server's health checked now, by one request, as HAProxy's own check asks it."""

from __future__ import annotations

import http.client

from .config import CHECK_TIMEOUT


def probe(address: str, port: int, path: str, timeout: float = CHECK_TIMEOUT) -> str:
    """GET `path` on the server; "" when it answers below 500 (HAProxy's rule, `http-check expect
    ! rstatus ^5`), else why not."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close", "User-Agent": "conpaas-agent-probe"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        connection.close()
    return f"HTTP {status}" if status >= 500 else ""
