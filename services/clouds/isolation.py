"""Local nodes isolated like small machines: a Unix user, a network namespace and cgroups each.

The local driver uses this when the platform runs as root with the tools for it. A node then
  - runs as its own Unix user (`cpn<slot>`), with its home 0700 under a machine-wide root
    (NODE_ROOT) and its own copy of the agent image, like a VM's disk;
  - lives in its own network namespace, on a bridge with an address of its own, behind a
    firewall of its own that the node cannot change (network.py);
  - is held in cgroups (cpu weight, memory, processes) under the control plane's own, v1 or v2
    (limits.py);
  - holds a slot of the machine-wide registry (slots.py), which names its address, user and
    namespace and the installation it belongs to.
This module sets such a node up and tears it down; the commands it runs as root are in
host_commands.py.
"""

import os
import pwd
import shutil
import signal
import time
from pathlib import Path

from conpaas_common.procs import free_port, pid_alive
from services.clouds.host_commands import TOOLS, IsolationError, run
from services.clouds.limits import JOIN_CGROUPS, CgroupError, Cgroups, Limits, this_machine
from services.clouds.network import Firewalls, Network
from services.clouds.slots import Slot, all_slots, next_free, registry_lock

# Folders every user may write to: a slot's user's files there go with the slot.
SHARED_TEMPORARY = ("/tmp", "/var/tmp", "/dev/shm")


def free_port_any() -> int:
    """A port that nothing on this host listens on, on any address (a published router's)."""
    return free_port("0.0.0.0")


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


class Isolation:
    def __init__(self, installation: Path, node_root: Path, cidr: str, limits: Limits, cgroups: Cgroups | None = None):
        self.installation = str(installation)
        self.node_root = node_root
        self.network = Network(cidr)
        self.firewalls = Firewalls(self.installation, self.network)
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
        store: tuple[str, int] | None = None,
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
                number = next_free(held, self.network.slots, str(self.network.net))
            elif (number := self.network.slot_at(address)) in held:
                raise IsolationError(f"{address} is held by another node ({held[number].node})")
            slot = Slot(number, self.installation, node, group, control, kind=kind, store=store)
            if publish:
                taken = {s.published for s in held.values()}
                if published is not None and published in taken:
                    raise IsolationError(f"port {published} is published for another node")
                slot.published = published or next(p for p in iter(free_port_any, None) if p not in taken)
            slot.save()
            try:
                self.network.ensure_bridge()
                self.network.add_namespace(slot)
                self._user(slot)
                self._cgroups(slot)
                self._home(slot, image)
                (Path(self.installation) / node).symlink_to(self.home(slot), target_is_directory=True)
                self.firewalls.converge(group)
                self.network.converge_host([*held.values(), slot])
            except Exception:
                self._teardown(slot)
                raise
            return slot

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

    # --- destroying -------------------------------------------------------------------------

    def release(self, node: str) -> None:
        # The slow part first, outside the machine-wide lock: the node's processes stopped and
        # the folders of its home removed (a big application's node holds it several times
        # over: MediaWiki's, ~100,000 files and seconds to remove). Under the lock, every node's
        # creation and deletion, of every installation, waited that long. The slot stays taken
        # meanwhile: its record and the installation's link to its home are still there.
        slot = self.slot_of(node)
        if slot is not None:
            self.stop_processes(slot)
            home = self.home(slot)
            for entry in os.scandir(home) if home.is_dir() else []:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
        with registry_lock():
            mine = [s for s in all_slots() if s.installation == self.installation and s.node == node]
            for slot in mine:
                self._teardown(slot)
                self.firewalls.converge(slot.group)
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
        self.network.remove_namespace(slot)
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
