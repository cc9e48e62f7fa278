"""The agent client: the only place in the control plane that speaks the agent protocol."""

import http.client
import json
import logging
from urllib.parse import quote

from conpaas_common import client
from conpaas_common.wire import (
    PROXY_METRICS_PATH,
    PROXY_PATH,
    PROXY_RELOAD_PATH,
    RELEASES_PATH,
    STATUS_PATH,
    instance_path,
)

log = logging.getLogger("conpaas.agent")


class AgentError(Exception):
    """An agent call failed. `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.detail = detail or message  # the agent's own sentence, without the node and status

    @property
    def unreachable(self) -> bool:
        return self.status is None


class AgentClient:
    def __init__(self, node, timeout: float = 30.0):
        self.node = node
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        data = b"" if body is None else json.dumps(body).encode()
        try:
            reply = client.call(
                self.node.agent_url, self.node.secret, method, path, data, timeout=timeout or self.timeout
            )
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"node {self.node.name} did not answer: {exc}") from None
        if reply.status >= 400:
            detail = self._error_detail(reply)
            raise AgentError(f"node {self.node.name}: {detail} (HTTP {reply.status})", reply.status, detail)
        return reply.json()

    @staticmethod
    def _error_detail(reply: client.Reply) -> str:
        try:
            detail = reply.json().get("error", "")
        except (ValueError, AttributeError):
            detail = ""
        return detail or reply.reason

    def status(self, timeout: float | None = None) -> dict:
        return self.call("GET", STATUS_PATH, timeout=timeout)

    def put_instance(self, name: str, spec: dict) -> dict:
        return self.call("PUT", instance_path(name), spec, timeout=900)

    def run_release(self, spec: dict) -> dict:
        """Run a version's release command (`spec`: an instance spec plus `command`) once on this
        node: {exit_code, output, seconds}."""
        return self.call("POST", RELEASES_PATH, spec, timeout=900)

    def get_instance(self, name: str, health_path: str = "/") -> dict:
        return self.call("GET", f"{instance_path(name)}?path={quote(health_path)}")

    def instance_logs(self, name: str, lines: int = 100) -> dict[str, list[str]]:
        """The last `lines` lines of each of the instance's log files, by file name."""
        return self.call("GET", f"{instance_path(name)}/logs?lines={int(lines)}", timeout=10)["files"]

    def delete_instance(self, name: str) -> None:
        self.call("DELETE", instance_path(name), timeout=60)

    def put_proxy(self, routing: dict, require_healthy: str | None = None) -> dict:
        """Apply the routing; with `require_healthy` (a backend key) the agent changes nothing
        (HTTP 409) unless that backend's servers pass their health checks."""
        path = PROXY_PATH + (f"?require_healthy={quote(require_healthy)}" if require_healthy else "")
        return self.call("PUT", path, routing, timeout=routing.get("drain_timeout", 30) + 30)

    def get_proxy(self) -> dict:
        return self.call("GET", PROXY_PATH)

    def proxy_metrics(self, window: int = 60) -> dict:
        return self.call("GET", f"{PROXY_METRICS_PATH}?window={int(window)}")

    def reload_proxy(self) -> dict:
        return self.call("POST", PROXY_RELOAD_PATH, {}, timeout=60)


def client_for(node, timeout: float = 30.0) -> AgentClient:
    """The one place the control plane gets an agent client; unit tests put the fake agent here."""
    return AgentClient(node, timeout=timeout)
