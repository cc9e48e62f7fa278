"""Local nodes isolated like small machines: a Unix user, a network namespace and cgroups each.

The local driver uses this when the platform runs as root with the tools for it. A node then
  - runs as its own Unix user (`cpn<slot>`), with its home 0700 under a machine-wide root
    (NODE_ROOT) and its own copy of the agent image, like a VM's disk;
  - lives in its own network namespace, on a bridge (`conpaas0`, 10.77.0.0/16 by default) with an
    address of its own and no route anywhere else; the control plane reaches it over that bridge,
    as it reaches a VM over a cloud network;
  - has a firewall of its own, set by root inside its namespace, that the node cannot change: it
    accepts connections from its service's other nodes (its security group), from the host, and
    on its router's public port; it may open connections to its group, to other nodes' routers,
    and to the control plane's port at the bridge's gateway, which the host forwards to the
    control plane;
  - is held in cgroups (cpu weight, memory, processes) under the control plane's own, v1 or v2
    (limits.py).

Network namespaces, bridges and users are machine-wide, while several installations (a
developer's `./run up` and a test run) may share the machine: slots are handed out from a
registry under /run, under one lock, and each records the installation that holds it.
"""

import fcntl
import ipaddress
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conpaas_common.procs import free_port, pid_alive
from services.clouds.limits import CgroupError, Cgroups, Limits, this_machine

REGISTRY = Path("/run/conpaas-local")
BRIDGE = "conpaas0"
TOOLS = ("ip", "nft", "useradd", "userdel", "setpriv", "setsid")
AGENT_PORT = 8470
# Folders every user may write to: a slot's user's files there go with the slot.
SHARED_TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")
HTTP_PORT = 80

# Joins the cgroups named by its arguments, then execs the rest: a fixed script, the paths and
# the command are arguments, so nothing is ever interpolated into shell text.
JOIN_CGROUPS = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'


def free_port_any() -> int:
    """A port that nothing on this host listens on, on any address (a published router's)."""
    return free_port("0.0.0.0")


class IsolationError(Exception):
    """A node's user, namespace or cgroups could not be set up or removed."""


def unavailable_reason(node_root: Path) -> str:
    """Why nodes cannot be isolated on this machine ('' when they can)."""
    if os.geteuid() != 0:
        return "the platform does not run as root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not Path("/usr/bin/python3").exists():
        return "no /usr/bin/python3 for the nodes' agents"
    for parent in [*reversed(node_root.parents)]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            return f"{parent} cannot be crossed by other users (chmod o+x, or set CONPAAS_LOCAL_NODE_ROOT)"
    return ""


def run(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise IsolationError(f"{' '.join(argv[:4])}… failed: {result.stderr.strip() or result.returncode}")
    return result


@contextmanager
def registry_lock():
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    (REGISTRY / "slots").mkdir(mode=0o700, exist_ok=True)
    with open(REGISTRY / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class Network:
    """The bridge and the address plan: slot n of the network is the node at address base + n."""

    def __init__(self, cidr: str):
        self.net = ipaddress.ip_network(cidr)
        self.gateway = str(self.net.network_address + 1)

    def address(self, slot: int) -> str:
        return str(self.net.network_address + slot)

    def slot_at(self, address: str) -> int:
        """The slot whose node has `address` (IsolationError: no node's address)."""
        try:
            number = int(ipaddress.ip_address(address)) - int(self.net.network_address)
        except ValueError:
            number = -1
        if number not in self.slots:
            raise IsolationError(f"{address} is not a node address of {self.net}")
        return number

    @property
    def slots(self) -> range:
        return range(2, self.net.num_addresses - 1)

    def ensure_bridge(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            return
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        # The control plane usually listens on loopback: the gateway's DNAT to it needs this.
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1")

    def remove_bridge(self) -> None:
        run("nft", "delete", "table", "ip", "conpaas_local", check=False)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run("ip", "link", "del", BRIDGE, check=False)

    def converge_host(self, slots: list["Slot"]) -> None:
        """The host's rules for every installation's nodes, in one atomic step: each control plane's
        port on the gateway forwarded to it, and each published router's host port to the router.
        Forwarding through the bridge is allowed for published connections only."""
        nat, published = [], []
        for host, port in sorted({s.control for s in slots}):
            nat.append(f'    iifname "{BRIDGE}" ip daddr {self.gateway} tcp dport {port} dnat to {host}:{port}')
        for slot in slots:
            if slot.published:
                router = f"{self.address(slot.number)}:{HTTP_PORT}"
                published.append(f"tcp dport {slot.published} dnat to {router}")
        prerouting = nat + [f'    iifname != "{BRIDGE}" fib daddr type local {rule}' for rule in published]
        # From this machine itself, to one of its own addresses (not loopback: replies could not return).
        output = [f"    fib daddr type local ip daddr != 127.0.0.0/8 {rule}" for rule in published]
        ruleset = f"""table ip conpaas_local {{}}
delete table ip conpaas_local
table ip conpaas_local {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
{chr(10).join(prerouting)}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
{chr(10).join(output)}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    # Node to node, when br_netfilter hands bridged traffic to this hook: each node's own
    # firewall decides.
    iifname "{BRIDGE}" oifname "{BRIDGE}" accept
    oifname "{BRIDGE}" ct status dnat accept
    iifname "{BRIDGE}" ct state established,related accept
    oifname "{BRIDGE}" drop
    iifname "{BRIDGE}" drop
  }}
}}
"""
        run("nft", "-f", "-", input=ruleset)
        if published:
            # Published routers are reached from other machines: this host forwards to the bridge
            # (the forward chain above lets through nothing else of the nodes').
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


@dataclass
class Slot:
    number: int
    installation: str  # the nodes directory of the installation holding it
    node: str
    group: str
    control: tuple[str, int]
    published: int | None = None  # the host port forwarded to the router (CONPAAS_LOCAL_PUBLISH)
    # "node", or "build": a build's sandbox, whose firewall lets it reach the package proxy
    # (`control`) and nothing else, not even other nodes' routers.
    kind: str = "node"

    @property
    def netns(self) -> str:
        return f"conpaas-n{self.number}"

    @property
    def user(self) -> str:
        return f"cpn{self.number}"

    @property
    def veth(self) -> str:
        return f"cpv{self.number}"

    @property
    def path(self) -> Path:
        return REGISTRY / "slots" / str(self.number)

    def save(self) -> None:
        record = {
            "installation": self.installation,
            "node": self.node,
            "group": self.group,
            "control": list(self.control),
            "published": self.published,
            "kind": self.kind,
        }
        self.path.write_text(json.dumps(record))

    @classmethod
    def load(cls, number: int) -> "Slot | None":
        try:
            record = json.loads((REGISTRY / "slots" / str(number)).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            number,
            record["installation"],
            record["node"],
            record["group"],
            tuple(record["control"]),
            record.get("published"),
            record.get("kind", "node"),
        )

    def stale(self) -> bool:
        """Held by a node whose record in its installation is gone (a crash, a deleted test home):
        the record is a link to the node's home, made under the lock when the slot is taken."""
        return not (Path(self.installation) / self.node).exists()


def all_slots() -> list[Slot]:
    slots = []
    for path in (REGISTRY / "slots").iterdir():
        if path.name.isdigit() and (slot := Slot.load(int(path.name))):
            slots.append(slot)
    return slots


class Isolation:
    def __init__(self, installation: Path, node_root: Path, cidr: str, limits: Limits, cgroups: Cgroups | None = None):
        self.installation = str(installation)
        self.node_root = node_root
        self.network = Network(cidr)
        self.limits = limits
        self.cgroups = cgroups or this_machine()

    # --- creating ---------------------------------------------------------------------------

    def allocate(
        self,
        node: str,
        group: str,
        control: tuple[str, int],
        image: Path,
        publish: bool = False,
        address: str | None = None,
        published: int | None = None,
        kind: str = "node",
    ) -> Slot:
        """Take a free slot and set up its namespace, user, cgroups and home (under the registry
        lock), with a host port forwarded to its router when `publish`; the installation's
        record of the node becomes a link to that home. A router replaced keeps its service's
        URL: `address` asks for the slot at that address, `published` for that host port."""
        with registry_lock():
            held = {slot.number: slot for slot in all_slots()}
            for slot in list(held.values()):
                if slot.stale():
                    self._teardown(slot)
                    del held[slot.number]
            if address is None:
                number = self._next_free(held)
            elif (number := self.network.slot_at(address)) in held:
                raise IsolationError(f"{address} is held by another node ({held[number].node})")
            slot = Slot(number, self.installation, node, group, control, kind=kind)
            if publish:
                taken = {s.published for s in held.values()}
                if published is not None and published in taken:
                    raise IsolationError(f"port {published} is published for another node")
                slot.published = published or next(p for p in iter(free_port_any, None) if p not in taken)
            slot.save()
            try:
                self.network.ensure_bridge()
                self._namespace(slot)
                self._user(slot)
                self._cgroups(slot)
                self._home(slot, image)
                (Path(self.installation) / node).symlink_to(self.home(slot), target_is_directory=True)
                self._converge_firewalls(group)
                self.network.converge_host([*held.values(), slot])
            except Exception:
                self._teardown(slot)
                raise
            return slot

    def _next_free(self, held: dict) -> int:
        """The first free slot after the last one handed out: an address just given up is not
        given again at once, so a deleted service's URL does not reach the next service."""
        counter = REGISTRY / "last"
        try:
            last = int(counter.read_text())
        except (OSError, ValueError):
            last = 0
        slots = self.network.slots
        order = [n for n in slots if n > last] + [n for n in slots if n <= last]
        number = next((n for n in order if n not in held), None)
        if number is None:
            raise IsolationError(f"no free address left in {self.network.net}")
        counter.write_text(str(number))
        return number

    def _namespace(self, slot: Slot) -> None:
        ns, veth, peer = slot.netns, slot.veth, f"cpp{slot.number}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", veth, "master", BRIDGE, "up")
        run("ip", "link", "set", peer, "netns", ns)
        inside = ("ip", "netns", "exec", ns)
        run(*inside, "ip", "link", "set", peer, "name", "eth0")
        prefix = self.network.net.prefixlen
        run(*inside, "ip", "addr", "add", f"{self.network.address(slot.number)}/{prefix}", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        # Replies to clients of a published router leave through the gateway; the node's own
        # firewall lets it open no connection off the bridge's network.
        run(*inside, "ip", "route", "add", "default", "via", self.network.gateway)
        # The router listens on port 80, as on a VM, without root.
        run(*inside, "sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0")
        # The router opens a connection per request to the instances on this node's own address
        # (gunicorn's sync workers close each one), so its side of each ends in TIME_WAIT. Linux
        # reuses those for a new connect() on loopback only (tcp_tw_reuse=2); here every connect()
        # searched the port range past them instead (perf: __inet_hash_connect and
        # __inet_check_established, most of HAProxy's 1.7 ms of CPU a request).
        run(*inside, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")

    def _user(self, slot: Slot) -> None:
        run("userdel", slot.user, check=False)  # a leftover of a crashed run of this slot
        home = self.home(slot)
        run(
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", str(home), "--shell", "/usr/sbin/nologin", slot.user,
        )  # fmt: skip

    def _cgroups(self, slot: Slot) -> None:
        try:
            self.cgroups.create(slot.netns, self.limits)
        except CgroupError as exc:
            raise IsolationError(str(exc)) from exc

    def home(self, slot: Slot) -> Path:
        return self.node_root / f"n{slot.number}"

    def _home(self, slot: Slot, image: Path | None) -> None:
        """The node's home, 0700 and its user's, with a copy of the agent image (root's: the
        agent's code is not the tenant's to change)."""
        user = pwd.getpwnam(slot.user)
        for folder in [*reversed(self.node_root.parents), self.node_root]:
            if not folder.exists():  # made by us: crossable by the node users, listable by none
                folder.mkdir(mode=0o711)
                os.chmod(folder, 0o711)
        os.chmod(self.node_root, 0o711)
        home = self.home(slot)
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(mode=0o700)
        if image is not None:
            shutil.copytree(image, home / "image", ignore=shutil.ignore_patterns("__pycache__"))
            # The platform's umask keeps what it writes private; the image is for the node to read.
            for folder, _, files in os.walk(home / "image"):
                os.chmod(folder, 0o755)
                for name in files:
                    os.chmod(os.path.join(folder, name), 0o644 if not name.endswith(".sh") else 0o755)
        os.chown(home, user.pw_uid, user.pw_gid)

    def owner(self, slot: Slot) -> tuple[int, int]:
        user = pwd.getpwnam(slot.user)
        return user.pw_uid, user.pw_gid

    def launch_argv(self, slot: Slot, command: list[str], detach: list[str]) -> list[str]:
        """`command` as the node's user, in its namespace and cgroups; `detach` (the local
        driver's: a session of its own, in the background) runs in the cgroups, as root."""
        procs = [str(path) for path in self.cgroups.procs(slot.netns)]
        user = pwd.getpwnam(slot.user)
        return [
            "sh", "-c", JOIN_CGROUPS, "sh", *procs, "--",
            *detach, "ip", "netns", "exec", slot.netns,
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
            *command,
        ]  # fmt: skip

    # --- firewalls --------------------------------------------------------------------------

    # --- links: a group's nodes reach every port of the groups it links (a data server) ---------

    @property
    def _links_path(self) -> Path:
        return Path(self.installation).parent / "node-links.json"

    def _links(self) -> dict[str, list[str]]:
        """group -> the groups it links, of this installation (called under the registry lock)."""
        try:
            return json.loads(self._links_path.read_text())
        except (OSError, ValueError):
            return {}

    def set_links(self, group: str, targets: list[str]) -> None:
        """Let the nodes of `group` reach the nodes of exactly `targets` (and be answered), on
        every port: a linked data service's server listens on one of its own."""
        with registry_lock():
            links = self._links()
            before = set(links.get(group, []))
            if targets:
                links[group] = sorted(set(targets))
            else:
                links.pop(group, None)
            tmp = self._links_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(links))
            os.replace(tmp, self._links_path)
            for changed in {group, *before, *targets}:
                self._converge_group(changed, links)

    def _converge_firewalls(self, group: str) -> None:
        """Rewrite the firewall of every node of `group` (its members changed), and of the groups
        linked with it both ways (their sets hold its addresses)."""
        links = self._links()
        related = {group, *links.get(group, []), *(g for g, targets in links.items() if group in targets)}
        for each in related:
            self._converge_group(each, links)

    def _converge_group(self, group: str, links: dict[str, list[str]]) -> None:
        mine = [s for s in all_slots() if s.installation == self.installation]

        def addresses(groups) -> list[str]:
            return [self.network.address(s.number) for s in mine if s.group in groups]

        peers = addresses({group})
        servers = addresses(set(links.get(group, [])))
        clients = addresses({g for g, targets in links.items() if group in targets})
        for slot in (s for s in mine if s.group == group):
            self._firewall(slot, peers, servers, clients)

    def _firewall(self, slot: Slot, peers: list[str], servers: list[str] = (), clients: list[str] = ()) -> None:
        gateway, net = self.network.gateway, self.network.net
        _, control_port = slot.control
        if slot.kind == "build":
            # A build's only way out: the package proxy, which the host forwards from the gateway.
            ruleset = f"""table inet conpaas {{}}
delete table inet conpaas
table inet conpaas {{
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
  }}
  chain output {{
    type filter hook output priority filter; policy drop;
    oif lo accept
    ct state established,related accept
    ip daddr {gateway} tcp dport {control_port} accept
    # Refused at once rather than dropped: an installer told to fetch from elsewhere fails in
    # a second with "connection refused", not after its retries' time-outs.
    meta l4proto tcp reject with tcp reset
    reject
  }}
}}
"""
            run("ip", "netns", "exec", slot.netns, "nft", "-f", "-", input=ruleset)
            return

        def elements(addresses) -> str:
            return f"elements = {{ {', '.join(addresses)} }}" if addresses else ""

        ruleset = f"""table inet conpaas {{}}
delete table inet conpaas
table inet conpaas {{
  set peers {{ type ipv4_addr; {elements(peers)} }}
  set servers {{ type ipv4_addr; {elements(servers)} }}
  set clients {{ type ipv4_addr; {elements(clients)} }}
  chain input {{
    type filter hook input priority filter; policy drop;
    iif lo accept
    ct state established,related accept
    ip saddr {gateway} accept
    ip saddr @peers accept
    ip saddr @clients accept
    tcp dport {HTTP_PORT} accept
  }}
  chain output {{
    type filter hook output priority filter; policy drop;
    oif lo accept
    ct state established,related accept
    ip daddr @peers accept
    ip daddr @servers accept
    ip daddr {gateway} tcp dport {control_port} accept
    ip daddr {net} tcp dport {HTTP_PORT} accept
  }}
}}
"""
        run("ip", "netns", "exec", slot.netns, "nft", "-f", "-", input=ruleset)

    # --- destroying -------------------------------------------------------------------------

    def release(self, node: str) -> None:
        with registry_lock():
            mine = [s for s in all_slots() if s.installation == self.installation and s.node == node]
            for slot in mine:
                self._teardown(slot)
                self._converge_firewalls(slot.group)
            self.network.converge_host(all_slots())

    def release_all(self) -> int:
        """Tear down every slot of this installation (builds' sandboxes a crash left); how many."""
        with registry_lock():
            mine = [s for s in all_slots() if s.installation == self.installation]
            for slot in mine:
                self._teardown(slot)
            if mine:
                self.network.converge_host(all_slots())
            return len(mine)

    def remove_network_if_unused(self) -> bool:
        """Remove the bridge and the nodes' cgroup folder once no installation has a node. Not on
        each node's release: while the bridge is up, a deleted node's address answers nothing,
        where without it the address would be routed off this machine."""
        with registry_lock():
            for slot in all_slots():
                if not slot.stale():
                    return False
                self._teardown(slot)
            self.network.remove_bridge()
            self.cgroups.remove_parent()
            return True

    def stop_processes(self, slot: Slot, timeout: float = 20.0) -> None:
        """Every process of the node (its cgroup, its user), SIGTERM then SIGKILL: by pid, nothing else."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            pids = self.pids(slot)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while pids and time.monotonic() < deadline:
                pids = [pid for pid in self.pids(slot) if pid_alive(pid)]
                time.sleep(0.05)
            if not pids:
                return

    def pids(self, slot: Slot) -> list[int]:
        found: set[int] = set()
        for path in self.cgroups.procs(slot.netns):
            try:
                found.update(int(p) for p in path.read_text().split())
            except OSError:
                pass
        try:
            uid = pwd.getpwnam(slot.user).pw_uid
        except KeyError:
            return sorted(found)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if entry.stat().st_uid == uid:
                        found.add(int(entry.name))
                except OSError:
                    pass
        return sorted(found)

    def _teardown(self, slot: Slot) -> None:
        self.stop_processes(slot)
        self.cgroups.remove(slot.netns)
        shutil.rmtree(self.home(slot), ignore_errors=True)
        self._remove_shared_files(slot)
        link = Path(slot.installation) / slot.node
        if link.is_symlink():
            link.unlink()
        run("userdel", slot.user, check=False)
        run("ip", "netns", "del", slot.netns, check=False)  # takes the veth pair with it
        run("ip", "link", "del", slot.veth, check=False)
        slot.path.unlink(missing_ok=True)

    @staticmethod
    def _remove_shared_files(slot: Slot) -> None:
        """What the slot's user left in the machine's shared temporary folders: the next node or
        build given the same user id must not find it."""
        try:
            uid = pwd.getpwnam(slot.user).pw_uid
        except KeyError:
            return
        for shared in SHARED_TEMPORARY:
            try:
                entries = list(os.scandir(shared))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)
                except OSError:
                    pass

    def slot_of(self, node: str) -> Slot | None:
        with registry_lock():
            return next(
                (s for s in all_slots() if s.installation == self.installation and s.node == node),
                None,
            )
