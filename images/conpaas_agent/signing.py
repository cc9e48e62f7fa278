"""Request signing shared by the agent and the control plane's agent client.

A request carries ``X-Conpaas-Timestamp: <unix seconds>`` and
``X-Conpaas-Signature: hex(HMAC-SHA256(secret, METHOD \\n PATH?QUERY \\n TIMESTAMP \\n
sha256hex(body)))``. Standard library only, no sibling imports: the control plane imports this
module as ``images.conpaas_agent.signing`` and the agent as ``conpaas_agent.signing``.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Conpaas-Timestamp"
SIGNATURE_HEADER = "X-Conpaas-Signature"
MAX_SKEW = 300  # seconds a timestamp may be away from the agent's clock


def sign(secret: str, method: str, path: str, timestamp: int, body: bytes) -> str:
    """Signature of one request; ``path`` is the request target including the query string."""
    message = "\n".join([method.upper(), path, str(int(timestamp)), hashlib.sha256(body or b"").hexdigest()])
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def verify(
    secret: str,
    method: str,
    path: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float | None = None,
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
    expected = sign(secret, method, path, timestamp, body)
    return hmac.compare_digest(expected, signature_header.strip().lower())


def signed_headers(secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The two headers to send with a request signed now."""
    timestamp = int(time.time())
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, method, path, timestamp, body),
    }
