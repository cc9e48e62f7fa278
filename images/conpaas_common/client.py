"""One signed request to an agent: the control plane's ``services/agent.py``, the tests and the
benchmarks all send through ``call``; ``call_json`` is the control plane's way, which turns a
failure into ``AgentError``. Standard library only."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import signing


class AgentError(Exception):
    """An agent call failed. `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.detail = detail or message  # the agent's own sentence, without the node and status

    @property
    def unreachable(self) -> bool:
        return self.status is None


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


def call_json(
    url: str, secret: str, method: str, path: str, body: object = None, timeout: float = 30.0, node: str = "the agent"
) -> object:
    """``call`` with ``body`` sent as JSON, answering the reply's JSON. No answer, or an error
    status (the agent's sentence is the ``error`` of its JSON answer), raises ``AgentError``
    whose message names ``node``."""
    data = b"" if body is None else json.dumps(body).encode()
    try:
        reply = call(url, secret, method, path, data, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:
        raise AgentError(f"{node} did not answer: {exc}") from None
    if reply.status >= 400:
        detail = _error_detail(reply)
        raise AgentError(f"{node}: {detail} (HTTP {reply.status})", reply.status, detail)
    return reply.json()


def _error_detail(reply: Reply) -> str:
    try:
        detail = reply.json().get("error", "")
    except (ValueError, AttributeError):
        detail = ""
    return detail or reply.reason
