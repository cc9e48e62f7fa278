"""The agent client: the only place in the control plane that speaks the agent protocol."""

import json
import logging
import urllib.error
import urllib.request
from urllib.parse import quote

from images.conpaas_agent import signing

log = logging.getLogger("conpaas.agent")


class AgentError(Exception):
    """An agent call failed. `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class AgentClient:
    def __init__(self, node, timeout: float = 30.0):
        self.node = node
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **signing.signed_headers(self.node.secret, method, path, data)}
        request = urllib.request.Request(
            self.node.agent_url + path,
            data=data if method in ("PUT", "POST") else None,
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise AgentError(self._error_text(exc), exc.code) from None
        except (OSError, urllib.error.URLError) as exc:
            raise AgentError(f"node {self.node.name} did not answer: {getattr(exc, 'reason', exc)}") from None
        return json.loads(payload) if payload else None

    def _error_text(self, exc: urllib.error.HTTPError) -> str:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            detail = ""
        return f"node {self.node.name}: {detail or exc.reason} (HTTP {exc.code})"

    def status(self, timeout: float | None = None) -> dict:
        return self.call("GET", "/v1/status", timeout=timeout)

    def put_instance(self, name: str, spec: dict) -> dict:
        return self.call("PUT", f"/v1/instances/{quote(name)}", spec, timeout=900)

    def get_instance(self, name: str, health_path: str = "/") -> dict:
        return self.call("GET", f"/v1/instances/{quote(name)}?path={quote(health_path)}")

    def delete_instance(self, name: str) -> None:
        self.call("DELETE", f"/v1/instances/{quote(name)}", timeout=60)

    def put_proxy(self, routing: dict) -> dict:
        return self.call("PUT", "/v1/proxy", routing, timeout=routing.get("drain_timeout", 30) + 30)

    def get_proxy(self) -> dict:
        return self.call("GET", "/v1/proxy")

    def proxy_metrics(self, window: int = 60) -> dict:
        return self.call("GET", f"/v1/proxy/metrics?window={int(window)}")

    def reload_proxy(self) -> dict:
        return self.call("POST", "/v1/proxy/reload", {}, timeout=60)
