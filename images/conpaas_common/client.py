"""One signed request to an agent: the control plane's ``services/agent.py``, the tests and the
benchmarks all send through ``call``. Standard library only."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import signing


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body) if self.body else None


def call(
    url: str,
    secret: str | None,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Reply:
    """Send ``METHOD path`` (the request target, query included) to the agent at ``url``
    (``http://host:port``), signed with ``secret``; ``secret=None`` sends it unsigned, and
    ``headers`` go last, so a test can send a signature of its own.

    Every HTTP answer is a ``Reply``; no answer at all raises ``OSError`` or
    ``http.client.HTTPException``."""
    target = urlsplit(url)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    signed = {} if secret is None else signing.signed_headers(secret, method, path, body)
    connection = connection_class(target.hostname, target.port, timeout=timeout)
    try:
        connection.request(
            method, path, body=body or None, headers={"Content-Type": "application/json", **signed, **(headers or {})}
        )
        response = connection.getresponse()
        return Reply(response.status, response.reason, response.msg, response.read())
    finally:
        connection.close()
