"""Request signing shared by the agent and the control plane's agent client.

A request carries ``X-Conpaas-Timestamp: <unix seconds>``, ``X-Conpaas-Nonce: <random>`` and
``X-Conpaas-Signature: hex(HMAC-SHA256(secret, METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n
sha256hex(body)))``. The agent accepts each nonce once (``ReplayGuard``), so a captured request
cannot be sent again within the clock window. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

TIMESTAMP_HEADER = "X-Conpaas-Timestamp"
NONCE_HEADER = "X-Conpaas-Nonce"
SIGNATURE_HEADER = "X-Conpaas-Signature"
MAX_SKEW = 300  # seconds a timestamp may be away from the agent's clock


def sign(secret: str, method: str, path: str, timestamp: int, body: bytes, nonce: str = "") -> str:
    """Signature of one request; ``path`` is the request target including the query string."""
    message = "\n".join([method.upper(), path, str(int(timestamp)), nonce, hashlib.sha256(body or b"").hexdigest()])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify(
    secret: str,
    method: str,
    path: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float | None = None,
    nonce: str | None = None,
) -> bool:
    """True when the signature matches and the timestamp is within ``MAX_SKEW`` seconds."""
    if not secret or not timestamp_header or not signature_header:
        return False
    try:
        timestamp = int(timestamp_header.strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > MAX_SKEW:
        return False
    expected = sign(secret, method, path, timestamp, body, nonce or "")
    return hmac.compare_digest(expected, signature_header.strip().lower())


def signed_headers(secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The two headers to send with a request signed now."""
    timestamp = int(time.time())
    nonce = secrets.token_hex(16)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: sign(secret, method, path, timestamp, body, nonce),
    }


class ReplayGuard:
    """Remembers the nonces of accepted requests for as long as their timestamps are valid."""

    def __init__(self, keep: float = 2 * MAX_SKEW + 10):
        self.keep = keep
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def first_use(self, nonce: str | None, now: float | None = None) -> bool:
        if not nonce or len(nonce) > 64:
            return False
        now = time.monotonic() if now is None else now
        with self.lock:
            if len(self.seen) > 10_000 or (self.seen and next(iter(self.seen.values())) < now):
                self.seen = {n: until for n, until in self.seen.items() if until >= now}
            if nonce in self.seen:
                return False
            self.seen[nonce] = now + self.keep
            return True
