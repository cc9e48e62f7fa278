"""In-memory stand-ins for our own seams: the node agent (`services.agent.client_for`) and a cloud.

`FakeFleet` holds what every node's agent would hold (instances, the last routing applied) and
the knobs a test turns: an instance that fails its health check, an instance whose process died,
a version whose instances exit at their start or fail their health check, a node that does not
answer, a router that refuses or fails the health-gated change, a router whose HAProxy died.
`calls` records every call in order, e.g. to check that a router drained an instance before it
stopped.
"""

import copy
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

from libcloud.compute.base import Node as CloudNode
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.types import NodeState

from conpaas_common.wire import NO_REQUESTS
from services.agent import AgentError
from services.clouds.sandbox import Sandbox
from services.nodes import agent_roles
from versions import build_plans


class FakeFleet:
    def __init__(self):
        self.instances: dict[str, dict] = {}  # instance name -> what the agent of its node reports (the last put)
        # (node name, instance name) -> the same: several nodes run a `server` or a `sentinel`
        self.on_node: dict[tuple[str, str], dict] = {}
        self.primary: tuple[str, int] | None = None  # (address, port) the sentinels name, once one is promoted
        self.bootstrapped: dict[str, str] = {}  # Patroni cluster -> the node whose member bootstrapped it
        self.seqno: dict[str, int] = {}  # node name -> the last commit its Galera member holds (0 unless set)
        self.nodes: dict[str, object] = {}  # node name -> the node, as its agent was last called
        self.routing: dict[str, dict] = {}  # proxy node name -> the routing it applied last
        self.calls: list[tuple] = []  # (node name, method, argument)
        self.unhealthy: set[str] = set()  # instance names whose health check fails
        self.crashing: dict[str, str] = {}  # instance name -> the last lines it logs as it exits at start
        self.unreachable: set[str] = set()  # node names that do not answer
        self.refusing: dict[str, int] = {}  # proxy node name -> HTTP status of a health-gated PUT
        self.figures: dict[str, dict] = {}  # proxy node name -> environment -> its metrics figures
        self.routers_down: set[str] = set()  # proxy node names whose HAProxy died (a PUT starts it)
        self.logs: dict[str, dict[str, list[str]]] = {}  # instance name -> log file name -> its lines
        self.concurrency = 2  # what put_instance reports a new instance serves at once
        self.releases: dict[str, tuple[int, str]] = {}  # version label -> (exit code, output) of its release
        self.crashing: dict[str, str] = {}  # version label -> what its instances print as they exit at start
        self.failing: dict[str, dict[str, list[str]]] = {}  # version label -> the logs of its instances, all unhealthy
        # backups (backup_wire.md): the base backups taken, oldest first; how far the WAL is
        # archived and why archiving fails; a backup or a restore that fails with these words
        self.base_backups: list[dict] = []
        self.specs: dict[str, dict] = {}
        self.purged: list[
            str
        ] = []  # instances deleted with their data  # instance name -> the last spec PUT (kept after its deletion)
        self.archived_until: str | None = None
        self.archive_failing: str | None = None
        self.backup_failing: str = ""
        self.restore_failing: str = ""
        self.restore_refusals: list[str] = []  # what the next restores fail with, one each
        self._ports = itertools.count(20000)

    def client(self, node, timeout: float = 30.0) -> "FakeAgent":
        return FakeAgent(self, node)

    # knobs
    def make_unhealthy(self, name: str) -> None:
        self.unhealthy.add(name)

    def promote(self, node) -> None:
        """Sentinel made `node`'s server the primary: the others are its replicas."""
        self.primary = (node.address, self.on_node[(node.name, "server")]["port"])

    def kill(self, name: str) -> None:
        """The instance's process exited (a host restart): the next put_instance starts it again."""
        self.instances[name]["state"] = "exited"

    def refuse(self, node, status: int = 409) -> None:
        """The router answers `status` to a health-gated change (409: "not healthy here")."""
        self.refusing[node.name] = status

    def healthy(self, name: str) -> bool:
        instance = self.instances.get(name)
        return instance is not None and instance["state"] == "running" and name not in self.unhealthy

    def calls_to(self, method: str) -> list[tuple]:
        return [call for call in self.calls if call[1] == method]


class FakeAgent:
    """The agent client's interface (services.agent.AgentClient), answering from a FakeFleet."""

    def __init__(self, fleet: FakeFleet, node):
        self.fleet, self.node = fleet, node

    def _call(self, method: str, argument=None, role: str | None = None) -> None:
        self.fleet.calls.append((self.node.name, method, copy.deepcopy(argument)))
        if self.node.name in self.fleet.unreachable:
            raise AgentError(f"node {self.node.name} did not answer: connection refused")
        if role and role not in agent_roles(self.node):
            self._fail(404, f"node {self.node.name} has no {role} role")

    def _fail(self, status: int, detail: str):
        raise AgentError(f"node {self.node.name}: {detail} (HTTP {status})", status, detail)

    def status(self, timeout: float | None = None) -> dict:
        self._call("status")
        mine = {name: v for (node, name), v in self.fleet.on_node.items() if node == self.node.name}
        proxy = self._proxy_status() if "proxy" in agent_roles(self.node) else None
        return {"name": self.node.name, "roles": agent_roles(self.node), "instances": mine, "proxy": proxy}

    def put_instance(self, name: str, spec: dict) -> dict:
        self._call("put_instance", name, role="backend")
        self.fleet.specs[name] = copy.deepcopy(spec)
        if name in self.fleet.crashing:  # as the agent answers it (an InstanceError)
            self._fail(422, f"instance {name} exited at start (code 1): {self.fleet.crashing[name]}")
        instance = self.fleet.on_node.get((self.node.name, name))
        # Like the agent: a changed spec (a link that moved) starts the instance again.
        if instance is None or instance["state"] != "running" or instance["env"] != spec.get("env", {}):
            # A data server's spec names no version: the agent calls it by its runtime.
            version, label = spec.get("version", spec.get("runtime")), spec.get("label", spec.get("runtime"))
            if label in self.fleet.crashing:
                self._fail(500, f"{name} exited at start:\n{self.fleet.crashing[label]}")
            if label in self.fleet.failing:
                self.fleet.unhealthy.add(name)
                self.fleet.logs[name] = copy.deepcopy(self.fleet.failing[label])
            instance = {"name": name, "node": self.node.name, "version": version, "label": label}
            instance["env"] = dict(spec.get("env", {}))
            if "restore" in spec and self.fleet.restore_refusals:
                self._fail(422, self.fleet.restore_refusals.pop(0))
            if "restore" in spec and self.fleet.restore_failing:
                self._fail(500, self.fleet.restore_failing)
            instance.update(backup=spec.get("backup"), restore=spec.get("restore"))
            port = spec.get("port") or next(self.fleet._ports)  # a rebuilt server asks for its old port
            instance.update(port=port, concurrency=self.fleet.concurrency, state="running")
            if spec.get("runtime") == "storage" and spec.get("role") == "master":  # where weed shell finds it
                address = self.node.address
                instance["details"] = {"master": f"{address}:9333.19333", "filer": f"{address}:8888.18888"}
            if spec.get("runtime") == "tcp_router":
                instance["details"] = {"replica_port": spec.get("replica_port") or next(self.fleet._ports)}
            instance.update(runtime=spec.get("runtime"), replica_of=spec.get("replica_of"), spec=spec)
            if galera := spec.get("galera"):
                # Galera: a member joins a synced one it is told of, or starts the cluster.
                if spec["peers"] and not spec["bootstrap"] and not self._galera_synced(galera["cluster"]):
                    self._fail(422, f"instance {name} exited at start (code 1): WSREP: failed to reach primary view")
                ports = ("galera_port", "ist_port", "sst_port", "check_port")
                instance["details"] = {port: next(self.fleet._ports) for port in ports}
                instance["bootstrapped"] = bool(spec["bootstrap"] or not spec["peers"])
            if cluster := spec.get("cluster"):  # Patroni: the first member bootstraps the cluster,
                if spec.get("restore"):  # and a restored one is it again
                    self.fleet.bootstrapped[cluster["scope"]] = self.node.name
                self.fleet.bootstrapped.setdefault(cluster["scope"], self.node.name)
                instance["details"] = {"api_port": cluster.get("api_port") or next(self.fleet._ports)}
            self.fleet.nodes[self.node.name] = self.node
            self.fleet.instances[name] = self.fleet.on_node[(self.node.name, name)] = instance
        instance["spec"] = copy.deepcopy(spec)  # a router's members change in place
        return self._public(name)

    def run_release(self, spec: dict) -> dict:
        self._call("run_release", spec, role="backend")
        code, output = self.fleet.releases.get(spec["label"], (0, f"ran {spec['command']}"))
        return {"exit_code": code, "output": output, "seconds": 0.1}

    def get_instance(self, name: str, health_path: str = "/") -> dict:
        self._call("get_instance", name, role="backend")
        instance = self.fleet.on_node.get((self.node.name, name))
        if instance is None:
            self._fail(404, f"no instance named {name}")
        ok = self.fleet.healthy(name)
        answer = {**self._public(name), "health": {"ok": ok, "status": 200 if ok else 500, "detail": ""}}
        if instance["runtime"] == "sentinel":
            host, port = self.fleet.primary or (
                instance["spec"]["monitor"]["host"],
                instance["spec"]["monitor"]["port"],
            )
            answer["replication"] = {"role": "sentinel", "master": {"host": host, "port": port}}
        elif instance["runtime"] == "tcp_router":
            answer["replication"] = {"role": "router", "primary": self._primary_member(instance["spec"]["members"])}
        elif instance["runtime"] == "mysql":
            seqno = self.fleet.seqno.get(self.node.name, 0)
            if instance["state"] != "running":
                answer["replication"] = {"role": None, "detail": "the server has exited", "seqno": seqno}
            else:
                answer["replication"] = {"role": "synced", "lag_s": 0, "in_sync": True, "cluster": "Primary"}
                cluster = instance["spec"]["galera"]["cluster"]
                # Galera counts the members it hears from: those of live nodes whose server runs.
                from services.choices import NodeState as Running
                from services.models import Node

                live = set(Node.objects.filter(state=Running.RUNNING).values_list("name", flat=True))
                members = [i for (n, _), i in self.fleet.on_node.items() if i.get("runtime") == "mysql" and n in live]
                size = sum(i["state"] == "running" and i["spec"]["galera"]["cluster"] == cluster for i in members)
                answer["replication"].update(seqno=seqno, cluster_size=size)
        elif instance["runtime"] in ("redis", "postgresql"):
            if self._is_primary(self.node.name, instance):
                answer["replication"] = {"role": "primary", "lag_s": 0}
            else:
                role = "replica" if instance["runtime"] == "redis" else "standby"
                answer["replication"] = {"role": role, "lag_s": 0, "link": "up", "in_sync": True, "sync_standby": True}
        return answer

    def _is_primary(self, node_name: str, server: dict) -> bool:
        """As Sentinel or Patroni would have it: the promoted server; else a redis server that
        started as no one's replica, the first member of a Patroni cluster, or a lone server."""
        node = self.fleet.nodes.get(node_name)
        if self.fleet.primary:
            return node is not None and (node.address, server["port"]) == self.fleet.primary
        cluster = server["spec"].get("cluster")
        if cluster:
            return self.fleet.bootstrapped.get(cluster["scope"]) == node_name
        return server["replica_of"] is None

    def instance_logs(self, name: str, lines: int = 100) -> dict[str, list[str]]:
        self._call("instance_logs", name, role="backend")
        if name not in self.fleet.instances:
            self._fail(404, f"no instance named {name}")
        return {file: found[-lines:] for file, found in self.fleet.logs.get(name, {}).items()}

    def delete_instance(self, name: str, purge: bool = False) -> None:
        self._call("delete_instance", name, role="backend")
        if purge:
            self.fleet.purged.append(name)
        instance = self.fleet.on_node.pop((self.node.name, name), None)
        if instance is not None and self.fleet.instances.get(name) is instance:
            self.fleet.instances.pop(name)

    def backup(self, name: str) -> dict:
        self._call("backup", name, role="backend")
        if not (self.fleet.instances.get(name) or {}).get("backup"):
            self._fail(409, f"instance {name} has no backup location")
        if self.fleet.backup_failing:
            self._fail(500, self.fleet.backup_failing)
        n = len(self.fleet.base_backups) + 1
        taken = {"backup_id": f"20261207T20000{n}", "begin_time": "2026-12-07T20:00:00+00:00"}
        taken.update(end_time=f"2026-12-07T20:00:0{n}+00:00", begin_wal="1", end_wal="2", size=1000 * n)
        self.fleet.base_backups.append(taken)
        return taken

    def backups(self, name: str, archive_only: bool = False) -> dict:
        self._call("backups", name, role="backend")
        fleet = self.fleet
        if archive_only:
            return {"archived_until": fleet.archived_until, "archive_failing": fleet.archive_failing}
        return {
            "backups": fleet.base_backups,
            "archived_until": fleet.archived_until,
            "archive_failing": fleet.archive_failing,
        }

    def delete_backup(self, name: str, backup_id: str) -> None:
        self._call("delete_backup", backup_id, role="backend")
        self.fleet.base_backups = [b for b in self.fleet.base_backups if b["backup_id"] != backup_id]

    def put_proxy(self, routing: dict, require_healthy: str | None = None) -> dict:
        self._call("put_proxy", {"routing": routing, "require_healthy": require_healthy}, role="proxy")
        if require_healthy is not None:
            if status := self.fleet.refusing.get(self.node.name):
                self._fail(status, "the router refused the change")
            servers = routing["backends"].get(require_healthy) or []
            sick = [s["name"] for s in servers if not self.fleet.healthy(s["name"])]
            if sick or not servers:
                self._fail(409, "; ".join(f"{name} is DOWN (L7STS, HTTP 500)" for name in sick) or "no server")
        self.fleet.routing[self.node.name] = copy.deepcopy(routing)
        self.fleet.routers_down.discard(self.node.name)
        return self._proxy_status()

    def get_proxy(self) -> dict:
        self._call("get_proxy", role="proxy")
        return self._proxy_status()

    def proxy_metrics(self, window: int = 60) -> dict:
        self._call("proxy_metrics", window, role="proxy")
        routes = self.fleet.routing.get(self.node.name, {}).get("routes", {})
        given = self.fleet.figures.get(self.node.name, {})
        return {
            "window_seconds": window,
            "environments": {
                env: {"version": key, **NO_REQUESTS, "live_connections": 0, **given.get(env, {})}
                for env, key in routes.items()
            },
        }

    def reload_proxy(self) -> dict:
        self._call("reload_proxy", role="proxy")
        return self._proxy_status()

    def _galera_synced(self, cluster: str) -> bool:
        return any(
            i.get("runtime") == "mysql" and i["state"] == "running" and i["spec"]["galera"]["cluster"] == cluster
            for i in self.fleet.on_node.values()
        )

    def _primary_member(self, members: list[dict]) -> str | None:
        """The member a router's checks find the primary (a Galera cluster's: the first synced)."""
        for member in members:
            server = self.fleet.on_node.get((member["name"], "server"))
            if server is not None and server.get("runtime") == "mysql":
                if server["state"] == "running":
                    return member["name"]
                continue
            server = self.fleet.on_node.get((member["name"], "server"))
            if server is not None and server["state"] == "running" and self._is_primary(member["name"], server):
                return member["name"]
        return None

    def _public(self, name: str) -> dict:
        hidden = ("node", "spec", "replica_of")
        return {k: v for k, v in self.fleet.on_node[(self.node.name, name)].items() if k not in hidden}

    def _proxy_status(self) -> dict:
        """The shape of the agent's Proxy.status(): the raw HAProxy fields and the verdict."""
        routing = self.fleet.routing.get(self.node.name, {"health_path": "/", "routes": {}, "preview_keys": {}})
        backends = {}
        for key, servers in routing.get("backends", {}).items():
            out = {}
            for server in servers:
                ok = self.fleet.healthy(server["name"])
                out[server["name"]] = {
                    "status": "UP" if ok else "DOWN",
                    "check": "L7OK" if ok else "L7STS",
                    "check_code": 200 if ok else 500,
                    "healthy": ok,
                    "sessions": 0,
                    "total": 0,
                }
            backends[key] = {"slot": f"slot{len(backends)}", "servers": out}
        return {
            "http_port": self.node.http_port,
            "running": self.node.name not in self.fleet.routers_down,
            "health_path": routing["health_path"],
            "health_status": routing.get("health_status"),
            "routes": routing["routes"],
            "preview_keys": routing["preview_keys"],
            "backends": backends,
        }


class MemoryCloud(DummyNodeDriver):
    """libcloud's dummy driver, starting empty and taking the boot user data like a real cloud;
    node destructions are appended to `calls` (a FakeFleet's, to see them in order with its calls).

    Knobs: `refusing` creations to refuse next, `dying` nodes to create that stop at once (their
    agent, in the fleet's `unreachable`, never answers), `stop(name)` a running node, and
    `log_lines`, what any node's log ends with. It keeps a router's address when asked, as the
    local cloud does."""

    ex_keeps_addresses = True

    def __init__(self, calls: list | None = None, unreachable: set | None = None):
        super().__init__("memory")
        self.nl = []
        self.calls = [] if calls is None else calls
        self.unreachable = set() if unreachable is None else unreachable
        self.refusing = self.dying = 0
        self.log_lines: list[str] = []
        self._numbers = itertools.count(1)

    def destroy_node(self, node):
        self.calls.append((node.name, "destroy_node", None))
        return super().destroy_node(node)

    def create_node(
        self, name, size=None, image=None, ex_userdata=None, ex_address=None, ex_http_port=None, ex_public_port=None
    ):
        if self.refusing:
            self.refusing -= 1
            raise RuntimeError("InstanceLimitExceeded: try again later")  # libcloud raises many types
        n = next(self._numbers)
        node = CloudNode(
            id=f"mem-{n}",
            name=name,
            state=NodeState.RUNNING,
            public_ips=[ex_address or f"10.0.0.{n}"],
            private_ips=[],
            driver=self,
            extra={"agent_port": 8470, "http_port": ex_http_port or 80, "userdata": ex_userdata},
        )
        self.nl.append(node)
        if self.dying:
            self.dying -= 1
            self.stop(name)
        return node

    def stop(self, name: str) -> None:
        """The node's machine stopped (its agent exited): the cloud says so, the agent is silent."""
        next(node for node in self.nl if node.name == name).state = NodeState.STOPPED
        self.unreachable.add(name)

    def ex_log_tail(self, node, lines: int = 10) -> list[str]:
        return self.log_lines[-lines:]

    # builds (versions/builds.py)
    ex_node_python = sys.executable
    build_exit = 0  # what each build step exits with
    build_lines = ["Collecting hello", "Successfully installed hello-0.1"]  # what it prints
    builds: list  # the steps run: (argv, working directory)

    @staticmethod
    def build_extra(site: Path) -> None:
        """What else a pip step leaves in the site folder (a test puts links, scripts there)."""

    def ex_build_sandbox(self, name: str, proxy_url: str) -> "FakeSandbox":
        self.__dict__.setdefault("builds", [])
        parent = Path(tempfile.mkdtemp(prefix="sandboxes-"))
        return FakeSandbox(self, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)), "http://proxy/index/")


class FakeSandbox(Sandbox):
    """Runs nothing: each step prints the cloud's `build_lines` and, when it exits 0, leaves what
    the installer would have installed (a module `hello`, a composer autoload.php)."""

    def __init__(self, cloud: MemoryCloud, home: Path, index_url: str):
        super().__init__(home, index_url)
        self.cloud = cloud

    def run(self, argv, cwd, env, timeout, on_line) -> int:
        if argv[1:3] == ["-c", build_plans.PACK]:
            return super().run(argv, cwd, env, timeout, on_line)  # the real packing step, as this user
        self.cloud.builds.append((argv, cwd))
        for line in self.cloud.build_lines:
            on_line(line)
        if self.cloud.build_exit == 0:
            if "composer" in argv:
                (cwd / "vendor").mkdir(exist_ok=True)
                (cwd / "vendor" / "autoload.php").write_text("<?php\n")
            else:
                site = cwd / argv[argv.index("--target") + 1]
                site.mkdir(parents=True, exist_ok=True)
                (site / "hello.py").write_text("GREETING = 'hello'\n")
                self.cloud.build_extra(site)
        return self.cloud.build_exit

    def close(self) -> None:
        shutil.rmtree(self.home.parent, ignore_errors=True)


class FakeStore:
    """A storage service's store (services/object_storage.py: Store.s3 and Store.shell) in memory:
    buckets and their objects, the identities `s3.configure` pushed, every `weed shell` script."""

    class BucketAlreadyOwnedByYou(Exception):
        pass

    def __init__(self):
        self.buckets: dict[str, dict[str, bytes]] = {}
        self.identities: dict[str, str] = {}  # access key -> the one bucket it reaches
        self.scripts: list[str] = []
        self.down = False  # the store does not answer
        self.volume_lists: list[str] = []  # what `volume.list` answers, one after the other
        self.exceptions = self  # boto3's client.exceptions.BucketAlreadyOwnedByYou

    def shell(self, store, script: str, what: str, strict: bool = True) -> str:
        from services.object_storage import StoreError

        if self.down:
            raise StoreError(f"{what}: weed shell failed (exit 1)")
        self.scripts.append(script)
        if script == "volume.list\n" and self.volume_lists:
            return self.volume_lists.pop(0)
        for line in script.splitlines():
            words = dict(word.lstrip("-").split("=", 1) for word in line.split()[1:] if "=" in word)
            if line.startswith("s3.configure") and "-delete" in line.split():
                bucket = words["user"].removeprefix("bucket-")
                self.identities = {key: name for key, name in self.identities.items() if name != bucket}
            elif line.startswith("s3.configure"):
                self.identities[words["access_key"]] = words["buckets"]
        return ""

    def create_bucket(self, Bucket: str):  # noqa: N803 (boto3's argument names)
        if self.down:
            raise OSError("connection refused")
        if Bucket in self.buckets:
            raise self.BucketAlreadyOwnedByYou(Bucket)
        self.buckets[Bucket] = {}

    def get_paginator(self, name: str):
        return self

    def paginate(self, Bucket: str):  # noqa: N803
        objects = self.buckets[Bucket]
        return [{"Contents": [{"Key": key, "Size": len(body)} for key, body in objects.items()]}]
