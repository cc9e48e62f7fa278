"""The `local` cloud: nodes are agent process groups on this host, recorded under CONPAAS_HOME/nodes/.

Each node boots by running images/boot.sh, exactly as cloud-init runs it on a VM. A node is its
own session and process group, so it keeps serving when the control plane stops, and
destroying it stops exactly its processes.

Two modes. Isolated (the platform runs as root with the tools for it, see isolation.py): each
node is a small machine of its own, with a Unix user, a network namespace with an address on
the nodes' bridge, cgroups and a firewall, and listens on a VM's ports (agent 8470, router 80).
Shared (anyone else): nodes are process groups of the platform's own user on 127.0.0.1, on free
ports, and tenants are not isolated from each other or from the platform.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState

from images.conpaas_agent.instances import BUILD_PASSTHROUGH, BUILD_PASSTHROUGH_PREFIXES
from images.conpaas_agent.procs import cmdline, free_port, group_members, pid_alive
from services.clouds import CloudError
from services.clouds.isolation import AGENT_PORT, HTTP_PORT, Isolation, Limits, unavailable_reason

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
BOOT_SCRIPT = IMAGES_DIR / "boot.sh"
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What an agent may inherit from the platform's environment: the router binary it is told to
# use and the build settings it passes to pip; nothing else (no secret of the platform's).
AGENT_PASSTHROUGH = {"CONPAAS_HAPROXY", *BUILD_PASSTHROUGH}


def group_has_live_member(pgid: int) -> bool:
    """True while a process of the group runs (zombies waiting to be reaped do not count)."""
    return bool(group_members(pgid))


def group_belongs_to(pgid: int, home: Path) -> bool:
    """Whether process group `pgid` is this node's: agent.pid is written on the node, so it is
    checked against what the group runs before anything is killed (never the control plane)."""
    marker = str(home)
    for pid in group_members(pgid):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if marker in cmdline(pid) or cwd.startswith(marker):
            return True
    return False


def isolation_problem(mode: str, node_root: Path) -> str:
    """'' when nodes are isolated; otherwise why they share the platform's user and network."""
    if mode == "off":
        return "isolation is turned off (CONPAAS_LOCAL_ISOLATION=off)"
    reason = unavailable_reason(node_root)
    if reason and mode == "required":
        raise CloudError(f"CONPAAS_LOCAL_ISOLATION=required, but nodes cannot be isolated: {reason}")
    return reason


def passed_to_agent(name: str) -> bool:
    return name in AGENT_PASSTHROUGH or name.startswith(BUILD_PASSTHROUGH_PREFIXES)


class LocalNodeDriver(NodeDriver):
    type = "conpaas_local"
    name = "ConPaaS local processes"
    website = "https://github.com/conpaas"
    features = {"create_node": []}

    def __init__(
        self,
        key: str,
        *args,
        ex_isolation: str = "auto",
        ex_node_root: str = "/var/lib/conpaas/nodes",
        ex_network: str = "10.77.0.0/16",
        ex_limits: Limits | None = None,
        ex_publish: str = "",
        **kwargs,
    ):
        # libcloud's first argument is the API key; for this driver it is the nodes directory.
        self.home = Path(key)
        super().__init__(key=key)
        self.isolation: Isolation | None = None
        self.publish = ex_publish  # the host name or address other machines reach routers at
        self.shared_reason = isolation_problem(ex_isolation, Path(ex_node_root))
        if not self.shared_reason:
            self.isolation = Isolation(self.home, Path(ex_node_root), ex_network, ex_limits or Limits())

    def create_node(self, name, size=None, image=None, location=None, ex_userdata: str = "", **kwargs):
        config = json.loads(ex_userdata)
        if self.isolation is None:
            home = self.home / name
            home.mkdir(parents=True, exist_ok=False)
            config.update(home=str(home), agent_bind=f"127.0.0.1:{free_port()}", http_bind=f"127.0.0.1:{free_port()}")
            if self.publish:  # the router on every address of this host, at the same port
                http_port = config["http_bind"].rsplit(":", 1)[1]
                config.update(http_bind=f"0.0.0.0:{http_port}", public_http=f"{self.publish}:{http_port}")
            launch, python, owner = ["setsid", "--fork"], sys.executable, None
            boot_script = BOOT_SCRIPT
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            control = urlsplit(config["control_url"])
            control_ip = socket.gethostbyname(control.hostname or "127.0.0.1")
            control_port = control.port or (443 if control.scheme == "https" else 80)
            group, publish = str(config.get("group") or name), bool(self.publish) and "proxy" in config["roles"]
            slot = self.isolation.allocate(name, group, (control_ip, control_port), IMAGES_DIR, publish)
            home, address = self.isolation.home(slot), self.isolation.network.address(slot.number)
            config.update(
                home=str(home),
                agent_bind=f"{address}:{AGENT_PORT}",
                http_bind=f"{address}:{HTTP_PORT}",
                # The control plane as this node sees it: the bridge's gateway forwards its port.
                control_url=urlunsplit(control._replace(netloc=f"{self.isolation.network.gateway}:{control_port}")),
            )
            if slot.published:
                config["public_http"] = f"{self.publish}:{slot.published}"
            launch, python, owner = self.isolation.launch_argv(slot, []), "/usr/bin/python3", self.isolation.owner(slot)
            boot_script = home / "image" / "boot.sh"
        config_path = home / "node.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        if owner:
            os.chown(config_path, *owner)
        env = {key: value for key, value in os.environ.items() if passed_to_agent(key)}
        env.update(PATH=NODE_PATH, LANG="C.UTF-8", HOME=str(home), CONPAAS_LOCAL="1", CONPAAS_PYTHON=python)
        with open(home / "boot.log", "ab") as boot_log:
            # The boot script's child becomes a session leader and writes its pid to agent.pid;
            # `setsid --fork` lets this process return at once without leaving a zombie behind.
            subprocess.run(
                [*launch, "bash", str(boot_script), str(config_path)],
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=boot_log,
                stderr=boot_log,
                check=True,
            )
        return self._node(self.home / name)

    def list_nodes(self):
        if not self.home.is_dir():
            return []
        return [self._node(path) for path in sorted(self.home.iterdir()) if (path / "node.json").exists()]

    def destroy_node(self, node, timeout: float = 20.0) -> bool:
        home = self.home / node.id
        pgid = self._pid(home)
        if pgid and group_belongs_to(pgid, home.resolve()):
            self._stop_group(pgid, timeout)  # the agent first, so it stops its instances in order
        if self.isolation is not None and home.is_symlink():
            self.isolation.release(node.id)
        else:
            shutil.rmtree(home, ignore_errors=True)
        return True

    def ex_remove_network(self) -> bool:
        """After the last node of every installation: remove the isolated nodes' bridge."""
        return self.isolation.remove_network_if_unused() if self.isolation else False

    def reboot_node(self, node) -> bool:
        return False

    def _stop_group(self, pgid: int, timeout: float) -> None:
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not group_has_live_member(pgid):
                    return
                time.sleep(0.05)

    @staticmethod
    def _pid(home: Path) -> int | None:
        try:
            return int((home / "agent.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _node(self, home: Path) -> Node:
        config = json.loads((home / "node.json").read_text())
        pid = self._pid(home)
        if pid is None:
            state = NodeState.PENDING
        elif pid_alive(pid):
            state = NodeState.RUNNING
        else:
            state = NodeState.STOPPED
        agent_host, agent_port = config["agent_bind"].rsplit(":", 1)
        _, http_port = config["http_bind"].rsplit(":", 1)
        extra = {"agent_port": int(agent_port), "http_port": int(http_port), "pid": pid, "home": str(home)}
        if config.get("public_http"):
            public_host, public_port = config["public_http"].rsplit(":", 1)
            extra.update(public_address=public_host, public_http_port=int(public_port))
        return Node(
            id=home.name,
            name=home.name,
            state=state,
            public_ips=[agent_host],
            private_ips=[agent_host],
            driver=self,
            extra=extra,
        )
