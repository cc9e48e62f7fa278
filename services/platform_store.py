"""The platform's own backup store: where backups go when the operator configured no S3 store
(CONPAAS_BACKUP_S3_*) and did not turn it off (CONPAAS_BACKUP_STORE=off). One SeaweedFS
`weed server` (master, volume server, filer, S3 gateway) on this host's loopback, which
`manage.py up` runs beside the web server and the workers (workflows/management/commands/up.py).

Everything of it lives in CONPAAS_HOME/backup-store and is kept across restarts and
`manage.py down`: its data, its ports (chosen once: nodes' archiving is configured with the
gateway's address), and its admin identity (0600 files; the S3 gateway reads it with
`-s3.config`). Each service's backups get a bucket and an identity of their own, pushed like a
storage service's (services/backup_store.py, services/object_storage.py).

Standard library and settings only: the local cloud reads the store's address from here.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from conpaas_common.procs import free_port

DIRECTORY = "backup-store"
CONFIG = "store.json"
ADMIN_IDENTITY = "s3.json"
LOG = "weed.log"
HOST = "127.0.0.1"
PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
# Volumes of 1 GiB (SeaweedFS's 30 GiB default reserves more than a small disk has).
VOLUME_SIZE_MB = 1024
# How long the store gets to stop on SIGTERM before it is killed: SeaweedFS's servers take 15 s
# over a graceful stop, and a kill loses nothing written (volumes are append-only, the filer's
# leveldb has a journal).
STOP_GRACE = 2.0


def wanted() -> bool:
    """Whether this installation's backups go to the platform's own store."""
    return settings.CONPAAS_BACKUP_STORE != "off" and not settings.CONPAAS_BACKUP_S3_ENDPOINT


def directory() -> Path:
    return Path(settings.CONPAAS_HOME) / DIRECTORY


@dataclass(frozen=True)
class StoreConfig:
    ports: dict[str, int]
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def master(self) -> str:
        """As `weed shell` takes it: host:port.grpcPort."""
        return f"{HOST}:{self.ports['master']}.{self.ports['master.grpc']}"

    @property
    def filer(self) -> str:
        return f"{HOST}:{self.ports['filer']}.{self.ports['filer.grpc']}"


def load() -> StoreConfig | None:
    """The store's ports and admin identity, once `prepare` made them; None before."""
    try:
        kept = json.loads((directory() / CONFIG).read_text())
        return StoreConfig({name: int(kept["ports"][name]) for name in PORTS}, kept["access_key"], kept["secret_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def endpoint() -> str:
    """The backup store's S3 address, whichever it is: the operator's, the platform's own (once
    made), or "" when there is none."""
    if settings.CONPAAS_BACKUP_S3_ENDPOINT or not wanted():
        return settings.CONPAAS_BACKUP_S3_ENDPOINT
    config = load()
    return config.endpoint if config else ""


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def prepare() -> tuple[StoreConfig, bool]:
    """The store's configuration, made on the first call (free ports, a new admin identity) and
    read on every later one; and whether it was made now (a new store: no bucket is in it)."""
    home = directory()
    (home / "data").mkdir(mode=0o700, parents=True, exist_ok=True)
    config = load()
    made = config is None
    if made:
        ports = {name: free_port(HOST) for name in PORTS}
        config = StoreConfig(ports, "CPBACKUP" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
        kept = {"ports": ports, "access_key": config.access_key, "secret_key": config.secret_key}
        _private(home / CONFIG, json.dumps(kept))
    identity = {
        "name": "admin",
        "credentials": [{"accessKey": config.access_key, "secretKey": config.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    _private(home / ADMIN_IDENTITY, json.dumps({"identities": [identity]}))
    return config, made


def command(config: StoreConfig, weed: str) -> list[str]:
    """The `weed server` command line (no secret on it: the admin identity is in a 0600 file)."""
    home = directory()
    argv = [weed, "server", f"-dir={home / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}", "-metricsPort=0"]
    argv += ["-master.telemetry=false", f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", "-volume.max=0"]
    argv += ["-volume.preStopSeconds=0", "-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    argv += [f"-s3.config={home / ADMIN_IDENTITY}"]
    for name, port in config.ports.items():
        option = name.replace(".grpc", ".port.grpc") if name.endswith(".grpc") else f"{name}.port"
        argv.append(f"-{option}={port}")
    return argv


def ports_in_use(config: StoreConfig) -> list[int]:
    """The store's ports something already listens on (another process, or a store that a killed
    `manage.py up` left running): the store would not start."""
    used = []
    for port in config.ports.values():
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((HOST, port)) == 0:
                used.append(port)
    return used
