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

import fcntl
import json
import math
import os
import re
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

from conpaas_common.procs import cmdline, free_port, group_members, pid_alive
from services.choices import DATA_RUNTIMES
from services.clouds import CloudError
from services.clouds.host_commands import IsolationError
from services.clouds.isolation import Isolation, unavailable_reason
from services.clouds.limits import Limits
from services.clouds.network import AGENT_PORT, HTTP_PORT
from services.clouds.sandbox import IsolatedSandbox, Sandbox, SharedSandbox

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
BOOT_SCRIPT = IMAGES_DIR / "boot.sh"
NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Starts its arguments in a session of their own, in the background, their output appended to
# the log named first, and prints their pid: the node's, which boot.sh and the agent keep (each
# execs the next; a shell's background child leads no group, so `setsid` needs no fork). The
# shell exits at once, so the node is nobody's child and no zombie is left behind.
DETACH = 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & echo $!'
# Runs first on a node booting with CONPAAS_LOCAL_BOOT_DELAY: "$0" is the delay.
DELAYED = 'sleep "$0" && exec "$@"'
# Fault injection (CONPAAS_LOCAL_FAIL_RATE): the cloud refuses the node, or its agent exits at once.
REFUSE, EXIT = "refuse", "exit"
DEAD_AGENT = 'echo "injected failure (CONPAAS_LOCAL_FAIL_RATE): the agent exits at once" >&2; exit 1'
CREATIONS = ".creations"  # the count of node creations, under the nodes directory
# The agent's line per request it answered (server.py): no news of why a node died, left out of its tail.
AGENT_ACCESS_LINE = re.compile(r" INFO conpaas_agent: [A-Z]+ \S+ -> \d{3} \(\d+ ms\)$")
# What an agent may inherit from the platform's environment: the router binary it is told to
# use; nothing else (no secret of the platform's, no proxy: nodes build nothing themselves).
AGENT_PASSTHROUGH = {"CONPAAS_HAPROXY"}
WEED = Path(sys.executable).with_name("weed")


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
    return name in AGENT_PASSTHROUGH


def node_process_runs(pid: int, home: str) -> bool:
    """Whether `pid` runs and is the node's, not a recycled pid: its command line names the node's
    home (it reads empty for an instant while the boot execs its next step: still running)."""
    if not pid_alive(pid):
        return False
    line = cmdline(pid)
    return not line or home in line


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` (a closed socket's TIME_WAIT does not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def printable(text: str) -> str:
    """A log line fit for an event: no terminal control characters."""
    return "".join(c if c.isprintable() else "?" for c in text)


class LocalNodeDriver(NodeDriver):
    type = "conpaas_local"
    name = "ConPaaS local processes"
    website = "https://github.com/conpaas"
    features = {"create_node": []}
    ex_keeps_addresses = True  # create_node takes ex_address, ex_http_port and ex_public_port

    def __init__(
        self,
        key: str,
        *args,
        ex_isolation: str = "auto",
        ex_node_root: str = "/var/lib/conpaas/nodes",
        ex_network: str = "10.77.0.0/16",
        ex_limits: Limits | None = None,
        ex_publish: str = "",
        ex_fail_rate: float = 0.0,
        ex_boot_delay: float = 0.0,
        ex_backup_store: str = "",
        **kwargs,
    ):
        # libcloud's first argument is the API key; for this driver it is the nodes directory.
        self.home = Path(key)
        super().__init__(key=key)
        self.fail_rate, self.boot_delay = ex_fail_rate, ex_boot_delay
        self.isolation: Isolation | None = None
        self.sandboxes: Isolation | None = None  # builds' sandboxes, beside the nodes
        self.publish = ex_publish  # the host name or address other machines reach routers at
        # The backup store's URL (services/platform_store.py: endpoint): isolated data nodes reach it at
        # the gateway, which forwards its port to it when it is on this host.
        self.backup_store = ex_backup_store
        self.shared_reason = isolation_problem(ex_isolation, Path(ex_node_root))
        self.limits_problem = ""  # isolated nodes' cgroup limits that cannot be set, and why
        self.limits_required = ex_isolation == "required"
        if not self.shared_reason:
            limits = ex_limits or Limits()
            self.isolation = Isolation(self.home, Path(ex_node_root), ex_network, limits)
            self.sandboxes = Isolation(
                self.home.parent / "sandboxes", Path(ex_node_root), ex_network, limits, self.isolation.cgroups
            )
            self.limits_problem = self.isolation.cgroups.problem()

    def _store_forward(self) -> tuple[str, int] | None:
        """The backup store's (address, port) on this host, to forward from the gateway; None
        when there is none or it is elsewhere (isolated nodes then cannot reach it: README)."""
        if not self.backup_store:
            return None
        store = urlsplit(self.backup_store)
        try:
            address = socket.gethostbyname(store.hostname or "")
        except OSError:
            return None
        if not is_local_address(address):
            return None
        return address, store.port or (443 if store.scheme == "https" else 80)

    def ex_store_url(self, url: str) -> str:
        """`url` (the backup store's) as this cloud's nodes reach it: isolated ones at the gateway."""
        if self.isolation is None or not self._store_forward():
            return url
        parts = urlsplit(url)
        return urlunsplit(parts._replace(netloc=f"{self.isolation.network.gateway}:{self._store_forward()[1]}"))

    def _refuse_without_limits(self, name: str) -> None:
        """CONPAAS_LOCAL_ISOLATION=required and a limit cannot be set: no node starts. Refused here,
        not when the driver is made, so that `manage.py down` can still remove the nodes."""
        if self.limits_required and self.limits_problem:
            raise CloudError(f"CONPAAS_LOCAL_ISOLATION=required, but {self.limits_problem}: {name} is not started")

    @property
    def ex_node_python(self) -> str:
        """The interpreter nodes run python instances on: a build must be made for it."""
        return "/usr/bin/python3" if self.isolation else sys.executable

    def ex_release_sandboxes(self) -> int:
        """Remove the builds' sandboxes a stopped or crashed control plane left; how many."""
        if self.sandboxes is not None:
            return self.sandboxes.release_all()
        parent = self.home.parent / "sandboxes"
        count = len(list(parent.iterdir())) if parent.is_dir() else 0
        shutil.rmtree(parent, ignore_errors=True)
        return count

    def ex_build_sandbox(self, name: str, proxy_url: str) -> Sandbox:
        """Where a build runs: isolated like a node, its only way out the package proxy at `proxy_url`."""
        if self.sandboxes is None:
            return SharedSandbox.make(self.home.parent / "sandboxes", name, proxy_url)
        self._refuse_without_limits(f"build sandbox {name}")
        return IsolatedSandbox.make(self.sandboxes, name, proxy_url)

    def create_node(
        self,
        name,
        size=None,
        image=None,
        location=None,
        ex_userdata: str = "",
        ex_address: str | None = None,
        ex_http_port: int | None = None,
        ex_public_port: int | None = None,
        **kwargs,
    ):
        """Boot a node. A router replacing a dead one keeps its service's URL: `ex_address` asks
        for its address (isolated), `ex_http_port` for its port (shared), `ex_public_port` for
        its published host port (isolated, CONPAAS_LOCAL_PUBLISH). Whatever fails on the way
        leaves nothing behind (home, slot, user, namespace, processes)."""
        config = json.loads(ex_userdata)
        self._refuse_without_limits(f"node {name}")
        fault = self._injected_fault()
        if self.isolation is None:
            if ex_http_port and port_in_use(ex_http_port):
                raise CloudError(f"port {ex_http_port} is in use: node {name} cannot take it")
            home = self.home / name
            home.mkdir(parents=True, exist_ok=False)
        else:
            self.home.mkdir(parents=True, exist_ok=True)
            control = urlsplit(config["control_url"])
            control_ip = socket.gethostbyname(control.hostname or "127.0.0.1")
            control_port = control.port or (443 if control.scheme == "https" else 80)
            group, publish = str(config.get("group") or name), bool(self.publish) and "proxy" in config["roles"]
            store = self._store_forward() if config.get("runtime") in DATA_RUNTIMES else None
            try:
                slot = self.isolation.allocate(
                    name,
                    group,
                    (control_ip, control_port),
                    IMAGES_DIR,
                    publish,
                    ex_address,
                    ex_public_port,
                    store=store,
                )
            except IsolationError as exc:
                raise CloudError(str(exc)) from exc
            home = self.isolation.home(slot)
        try:  # from here on, a failure takes back what was made
            detach = ["sh", "-c", DETACH, "sh", str(home / "boot.log")]
            if self.isolation is None:
                http_port = ex_http_port or free_port()
                config.update(home=str(home), agent_bind=f"127.0.0.1:{free_port()}", http_bind=f"127.0.0.1:{http_port}")
                if self.publish:  # the router on every address of this host, at the same port
                    config.update(http_bind=f"0.0.0.0:{http_port}", public_http=f"{self.publish}:{http_port}")
                python, owner, boot_script = sys.executable, None, BOOT_SCRIPT

                def launch(command: list[str]) -> list[str]:
                    return [*detach, *command]
            else:
                address = self.isolation.network.address(slot.number)
                config.update(
                    home=str(home),
                    agent_bind=f"{address}:{AGENT_PORT}",
                    http_bind=f"{address}:{HTTP_PORT}",
                    # The control plane as this node sees it: the bridge's gateway forwards its port.
                    control_url=urlunsplit(control._replace(netloc=f"{self.isolation.network.gateway}:{control_port}")),
                )
                if slot.published:
                    config["public_http"] = f"{self.publish}:{slot.published}"
                python, owner, boot_script = "/usr/bin/python3", self.isolation.owner(slot), home / "image" / "boot.sh"

                def launch(command: list[str]) -> list[str]:
                    return self.isolation.launch_argv(slot, command, detach)

            if fault == REFUSE:
                raise CloudError(f"injected failure (CONPAAS_LOCAL_FAIL_RATE): the local cloud refused node {name}")
            config_path = home / "node.json"
            fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(config, f)
            if owner:
                os.chown(config_path, *owner)
            env = {key: value for key, value in os.environ.items() if passed_to_agent(key)}
            env.update(PATH=NODE_PATH, LANG="C.UTF-8", HOME=str(home), CONPAAS_LOCAL="1", CONPAAS_PYTHON=python)
            # A storage node's SeaweedFS: this host's, the platform's dependency (checked by its sha256).
            env["CONPAAS_WEED"] = str(WEED)
            if fault == EXIT:
                command = ["sh", "-c", DEAD_AGENT, str(config_path)]  # a node's command line, until it exits
            else:
                delay = ["sh", "-c", DELAYED, str(self.boot_delay)] if self.boot_delay > 0 else []
                command = [*delay, "bash", str(boot_script), str(config_path)]
            self._write_pid(home, self._launch(launch(command), env), owner)
        except BaseException:
            self._discard(name)
            raise
        return self._node(self.home / name)

    @staticmethod
    def _launch(argv: list[str], env: dict) -> int:
        """Run `argv` (it detaches the node and prints its pid); return the pid."""
        result = subprocess.run(
            argv, env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
        )
        try:
            return int(result.stdout.split()[-1])
        except (IndexError, ValueError):
            raise CloudError(f"the node's boot did not start: {result.stderr.strip() or result.returncode}") from None

    @staticmethod
    def _write_pid(home: Path, pid: int, owner: tuple[int, int] | None) -> None:
        """agent.pid, known from the start: the node's agent keeps this pid (boot.sh execs it)
        and writes it again, so it stays the node's (the agent's, hence its user's) file."""
        tmp = home / "agent.pid.tmp"
        tmp.write_text(f"{pid}\n")
        if owner:
            os.chown(tmp, *owner)
        os.replace(tmp, home / "agent.pid")

    def _discard(self, name: str) -> None:
        self.destroy_node(Node(name, name, NodeState.UNKNOWN, [], [], self), timeout=5)

    def _injected_fault(self) -> str:
        """'' or which failure this creation gets (CONPAAS_LOCAL_FAIL_RATE). Creations are
        counted per installation and the n-th fails when ceil(n × rate) grows, so failures are
        spread evenly from the first creation on; they alternate, REFUSE first, then EXIT."""
        if self.fail_rate <= 0:
            return ""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / CREATIONS, "a+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)  # workers create nodes in parallel
            counter.seek(0)
            count = int(counter.read().strip() or 0) + 1
            counter.seek(0)
            counter.truncate()
            counter.write(str(count))
        failures = math.ceil(round(count * self.fail_rate, 9))
        if failures == math.ceil(round((count - 1) * self.fail_rate, 9)):
            return ""
        return REFUSE if failures % 2 else EXIT

    def ex_log_tail(self, node, lines: int = 10) -> list[str]:
        """The last lines of the node's boot.log and agent.log, each named by its file."""
        home = self.home / node.id
        found = []
        for name in ("boot.log", "agent.log"):
            try:
                with open(home / name, "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                    text = f.read().decode(errors="replace")
            except OSError:
                continue
            kept = [line for line in text.splitlines() if line.strip() and not AGENT_ACCESS_LINE.search(line)][-lines:]
            found += [f"{name}: {printable(line)[:300]}" for line in kept]
        return found

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
        elif node_process_runs(pid, config["home"]):
            state = NodeState.RUNNING
        else:
            state = NodeState.STOPPED  # its agent exited: the node is dead
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


def is_local_address(address: str) -> bool:
    """Whether `address` is one of this host's (a socket can be bound to it)."""
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True
