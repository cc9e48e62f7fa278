"""The agent client: the only place in the control plane that speaks the agent protocol."""

import logging
from urllib.parse import quote

from conpaas_common.client import AgentError, call_json
from conpaas_common.wire import (
    PROXY_METRICS_PATH,
    PROXY_PATH,
    PROXY_RELOAD_PATH,
    RELEASES_PATH,
    STATUS_PATH,
    backup_path,
    backups_path,
    instance_path,
)

__all__ = ["AgentClient", "AgentError", "client_for"]  # AgentError: what every call may raise

log = logging.getLogger("conpaas.agent")

# A base backup or a restore of a large database takes long; the agent bounds both at 6 h.
BACKUP_TIMEOUT = RESTORE_TIMEOUT = 6 * 3600 + 60


class AgentClient:
    def __init__(self, node, timeout: float = 30.0):
        self.node = node
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None):
        node = self.node
        return call_json(node.agent_url, node.secret, method, path, body, timeout or self.timeout, f"node {node.name}")

    def status(self, timeout: float | None = None) -> dict:
        return self.call("GET", STATUS_PATH, timeout=timeout)

    def put_instance(self, name: str, spec: dict) -> dict:
        # A restore (a base backup and its WAL, or an RDB) answers when the server serves it.
        return self.call("PUT", instance_path(name), spec, timeout=RESTORE_TIMEOUT if spec.get("restore") else 900)

    def run_release(self, spec: dict) -> dict:
        """Run a version's release command (`spec`: an instance spec plus `command`) once on this
        node: {exit_code, output, seconds}."""
        return self.call("POST", RELEASES_PATH, spec, timeout=900)

    def get_instance(self, name: str, health_path: str = "/") -> dict:
        return self.call("GET", f"{instance_path(name)}?path={quote(health_path)}")

    def instance_logs(self, name: str, lines: int = 100) -> dict[str, list[str]]:
        """The last `lines` lines of each of the instance's log files, by file name."""
        return self.call("GET", f"{instance_path(name)}/logs?lines={int(lines)}", timeout=10)["files"]

    def delete_instance(self, name: str, purge: bool = False) -> None:
        """Stop and remove the instance; with `purge` its directory too (a data server's data,
        which a plain delete keeps for the next start of that name)."""
        self.call("DELETE", instance_path(name) + ("?purge=true" if purge else ""), timeout=60)

    def backup(self, name: str) -> dict:
        """Take a base backup of a postgresql instance into its backup location now:
        {backup_id, begin_time, end_time, begin_wal, end_wal, size}; 409 without a location."""
        return self.call("POST", backup_path(name), {}, timeout=BACKUP_TIMEOUT)

    def backups(self, name: str, archive_only: bool = False) -> dict:
        """{backups: [oldest first], archived_until, archive_failing} of a postgresql instance;
        `archive_only`: only the last two (cheap: no listing of the store)."""
        if archive_only:
            return self.call("GET", backups_path(name) + "?archive_only=true", timeout=30)
        return self.call("GET", backups_path(name), timeout=180)

    def delete_backup(self, name: str, backup_id: str) -> None:
        self.call("DELETE", backups_path(name, backup_id), timeout=600)

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
