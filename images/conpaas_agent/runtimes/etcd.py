"""etcd: the store a replicated postgresql service's Patroni members agree through (who holds
the leader lock, the cluster's settings), one member on the service's router node (Debian's
etcd-server). It lives and dies with the router, the service's one address: while the router is
down the service is unreachable anyway, and Patroni's failsafe mode keeps the primary serving
when its members still see each other. A router rebuilt starts an empty etcd, which the
primary's Patroni fills again (README, Replication and failover)."""

from __future__ import annotations

import os

from conpaas_common.procs import free_port

from .base import InstanceError, Recipe, Run, installed
from .data import answers_tcp

ETCD = "/usr/bin/etcd"


class Etcd(Recipe):
    name = "etcd"
    archive = False
    fields = frozenset({"port"})
    start_timeout = 30.0

    def validate(self, body: dict) -> dict:
        port = body.get("port")
        if port is None:
            return {}
        if isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535:
            raise InstanceError("port must be an integer from 1024 to 65535", 400)
        return {"port": port}

    def start(self, run: Run) -> None:
        etcd = installed(ETCD, "etcd", "postgresql")
        # Its peer port is for itself alone (one member): on loopback, kept in its directory so
        # that a restart finds the member its data names.
        peer_file = run.path("peer_port")
        try:
            with open(peer_file) as fh:
                peer = int(fh.read())
        except (OSError, ValueError):
            peer = free_port("127.0.0.1")
            with open(peer_file, "w") as fh:
                fh.write(str(peer))
        client = f"http://{run.host}:{run.port}"
        peer_url = f"http://127.0.0.1:{peer}"
        run.spawn(
            [
                etcd,
                "--name=dcs",
                f"--data-dir={run.path('data')}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=dcs={peer_url}",
                "--log-level=warn",
                "--logger=zap",
            ]
        )

    def ready(self, run: Run) -> bool:
        return answers_tcp(run.host, run.port) and os.path.isdir(run.path("data"))

    def healthy(self, host: str, port: int, path: str) -> dict:
        ok = answers_tcp(host, port)
        return {"ok": ok, "status": None, "detail": "accepts connections" if ok else "refuses connections"}

    def marker(self, run: Run) -> str:
        return run.path("data")
