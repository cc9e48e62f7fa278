"""The `local` cloud: nodes are agent process groups on this host, under CONPAAS_HOME/nodes/.

Each node gets its own directory and its own ports, and boots by running images/boot.sh,
exactly as cloud-init runs it on a VM. A node is its own session and process group, so it
keeps serving when the control plane stops, and destroying it stops exactly its processes.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from libcloud.compute.base import Node, NodeDriver
from libcloud.compute.types import NodeState

from images.conpaas_agent.procs import cmdline, free_port, group_members, pid_alive

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
BOOT_SCRIPT = IMAGES_DIR / "boot.sh"


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


class LocalNodeDriver(NodeDriver):
    type = "conpaas_local"
    name = "ConPaaS local processes"
    website = "https://github.com/conpaas"
    features = {"create_node": []}

    def __init__(self, key: str, *args, **kwargs):
        # libcloud's first argument is the API key; for this driver it is the nodes directory.
        self.home = Path(key)
        super().__init__(key=key)

    def create_node(self, name, size=None, image=None, location=None, ex_userdata: str = "", **kwargs):
        config = json.loads(ex_userdata)
        home = self.home / name
        home.mkdir(parents=True, exist_ok=False)
        config.update(
            home=str(home),
            agent_bind=f"127.0.0.1:{free_port()}",
            http_bind=f"127.0.0.1:{free_port()}",
        )
        config_path = home / "node.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        env = {**os.environ, "CONPAAS_LOCAL": "1", "CONPAAS_PYTHON": sys.executable}
        with open(home / "boot.log", "ab") as log:
            # The boot script's child becomes a session leader and writes its pid to agent.pid;
            # `setsid --fork` lets this process return at once without leaving a zombie behind.
            subprocess.run(
                ["setsid", "--fork", "bash", str(BOOT_SCRIPT), str(config_path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
            )
        return self._node(home)

    def list_nodes(self):
        if not self.home.is_dir():
            return []
        return [self._node(path) for path in sorted(self.home.iterdir()) if (path / "node.json").exists()]

    def destroy_node(self, node, timeout: float = 20.0) -> bool:
        home = self.home / node.id
        pgid = self._pid(home)
        if pgid and group_belongs_to(pgid, home):
            self._stop_group(pgid, timeout)
        shutil.rmtree(home, ignore_errors=True)
        return True

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
        return Node(
            id=home.name,
            name=home.name,
            state=state,
            public_ips=[agent_host],
            private_ips=[agent_host],
            driver=self,
            extra={"agent_port": int(agent_port), "http_port": int(http_port), "pid": pid, "home": str(home)},
        )
