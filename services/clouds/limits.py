"""An isolated node's resource limits: CPU weight, memory and processes, held by cgroups.

Whichever hierarchy this machine mounts (read from /proc/self/mountinfo, never guessed):
  - cgroup v1 (one hierarchy per controller, also on hybrid machines whose cpu, memory and pids
    are still v1): `cpu.shares`, `memory.limit_in_bytes`, `pids.max` in a cgroup of the node's
    in each, under the platform's own;
  - cgroup v2 (one unified hierarchy): `cpu.weight`, `memory.max`, `pids.max` in one cgroup of
    the node's, under a `conpaas` parent of the platform's. v2 lets processes live in leaves only,
    so before it hands the controllers down, the platform's own processes move into a leaf of
    their own (`conpaas-platform`) beside that parent: they stay under the same cgroup, and
    whatever limits the platform still limits its nodes.
A limit that cannot be set is named by `missing()`: `./run up` says so, and
CONPAAS_LOCAL_ISOLATION=required starts no node without it.
"""

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("cpu", "memory", "pids")
# What each controller holds, as `./run up` names a limit that does not hold.
LIMIT_NAMES = {"cpu": "CPU weight", "memory": "memory", "pids": "process count"}
PARENT = "conpaas"  # the nodes' cgroups' parent, under the platform's own
PLATFORM_LEAF = "conpaas-platform"  # v2: where the platform's own processes move
# Joins the cgroups named by its arguments, then execs the rest: a fixed script, the paths and
# the command are arguments, so nothing is ever interpolated into shell text.
JOIN_CGROUPS = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'


class CgroupError(Exception):
    """A node's cgroup could not be made, joined or removed."""


@dataclass(frozen=True)
class Limits:
    cpu_shares: int = 512  # cgroup v1's scale: the platform's processes have 1024
    memory_mb: int = 2048
    pids: int = 1024


def cpu_weight(shares: int) -> int:
    """cgroup v1's cpu.shares (2..262144, default 1024) as v2's cpu.weight (1..10000, default
    100): the linear map runc and crun use, so a value means what it means under them."""
    shares = min(max(shares, 2), 262144)
    return 1 + (shares - 2) * 9999 // 262142


@dataclass(frozen=True)
class Mount:
    point: Path
    root: str  # the folder of the hierarchy mounted there (not "/" in some containers)
    fstype: str
    options: frozenset[str]


def read_mounts(mountinfo: str) -> list[Mount]:
    """The cgroup mounts of a /proc/<pid>/mountinfo text."""
    mounts = []
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        fields, tail = fields.split(), tail.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        mounts.append(Mount(Path(point), fields[3], tail[0], frozenset(tail[2].split(","))))
    return mounts


def own_paths(proc_cgroup: str) -> dict[str, str]:
    """This process's cgroup per v1 controller, and under "" its v2 one (/proc/self/cgroup)."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


def under(mount: Mount, path: str) -> Path:
    """Where cgroup `path` (as /proc/<pid>/cgroup names it) is seen through `mount`."""
    root = mount.root.rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return mount.point / path.lstrip("/")


def detect(mountinfo: str, proc_cgroup: str) -> "Cgroups":
    """The cgroups this machine gives nodes: v1 if any of the controllers is mounted as v1 (a
    hybrid machine's v2 mount then holds none of them), else v2 if a cgroup2 is mounted."""
    mounts, own = read_mounts(mountinfo), own_paths(proc_cgroup)
    v1 = {c: m for c in CONTROLLERS for m in mounts if m.fstype == "cgroup" and c in m.options}
    if v1:
        return CgroupsV1({c: under(m, own.get(c, "/")) for c, m in v1.items()})
    v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
    if v2:
        return CgroupsV2(under(v2, own.get("", "/")))
    return Cgroups()


def this_machine(pid: int | str = "self") -> "Cgroups":
    """The cgroups of process `pid` (this one by default) on this machine."""
    return detect(Path("/proc/self/mountinfo").read_text(), Path(f"/proc/{pid}/cgroup").read_text())


def write(path: Path, value: object) -> None:
    try:
        path.write_text(str(value))
    except OSError as exc:
        raise CgroupError(f"cannot write {value} to {path}: {exc.strerror or exc}") from exc


class Cgroups:
    """No cgroup controller is mounted: no limit holds. The base of the v1 and v2 writers."""

    def missing(self) -> dict[str, str]:
        """Each controller whose limit cannot be set -> why."""
        return dict.fromkeys(CONTROLLERS, "no cgroup hierarchy is mounted")

    def create(self, name: str, limits: Limits) -> None:
        """The cgroup(s) of node `name`, with every limit that can be set."""

    def procs(self, name: str) -> list[Path]:
        """The cgroup.procs files a process of node `name` joins."""
        return []

    def own_procs(self) -> list[Path]:
        """The cgroup.procs files of the process these cgroups were read for (a bench joins a node's)."""
        return []

    def remove(self, name: str) -> None:
        """Node `name`'s cgroups (emptied by now: rmdir waits a moment for the last exits)."""
        for folder in [p.parent for p in self.procs(name)]:
            deadline = time.monotonic() + 5
            while folder.exists():
                try:
                    folder.rmdir()
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove {folder}: {exc.strerror or exc}") from exc
                    time.sleep(0.05)

    def remove_parent(self) -> None:
        """The nodes' parent cgroup(s), once no node has one."""

    def held(self) -> list[str]:
        missing = self.missing()
        return [c for c in CONTROLLERS if c not in missing]

    def problem(self) -> str:
        """'' when every limit holds; else which do not, and why."""
        by_reason: dict[str, list[str]] = {}
        for controller, reason in self.missing().items():
            by_reason.setdefault(reason, []).append(LIMIT_NAMES[controller])
        parts = []
        for reason, names in by_reason.items():
            if len(names) == 1:
                parts.append(f"the {names[0]} limit does not hold ({reason})")
            else:
                parts.append(f"the {', '.join(names[:-1])} and {names[-1]} limits do not hold ({reason})")
        return "; ".join(parts)


class CgroupsV1(Cgroups):
    def __init__(self, own: dict[str, Path]):
        self.own = own  # controller -> the platform's cgroup in that controller's hierarchy

    def missing(self) -> dict[str, str]:
        found = {}
        for controller in CONTROLLERS:
            if controller not in self.own:
                found[controller] = "cgroup v1 mounts no hierarchy of their controllers (and v2 gets none beside it)"
            elif not self.own[controller].is_dir():
                found[controller] = f"{self.own[controller]} is not there"
        return found

    def folder(self, controller: str, name: str) -> Path:
        return self.own[controller] / PARENT / name

    def create(self, name: str, limits: Limits) -> None:
        values = {
            "cpu": ("cpu.shares", limits.cpu_shares),
            "memory": ("memory.limit_in_bytes", limits.memory_mb * 1024 * 1024),
            "pids": ("pids.max", limits.pids),
        }
        for controller in self.held():
            folder = self.folder(controller, name)
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / values[controller][0], values[controller][1])

    def procs(self, name: str) -> list[Path]:
        return [self.folder(c, name) / "cgroup.procs" for c in self.held()]

    def own_procs(self) -> list[Path]:
        return [self.own[c] / "cgroup.procs" for c in self.held()]

    def remove_parent(self) -> None:
        for controller in self.held():
            try:
                (self.own[controller] / PARENT).rmdir()
            except OSError:
                pass  # not there, or a node of another installation still has one


class CgroupsV2(Cgroups):
    def __init__(self, own: Path):
        self.own = own
        # After the move below, the platform's processes report the leaf: its parent is theirs.
        self.base = own.parent if own.name == PLATFORM_LEAF else own

    def missing(self) -> dict[str, str]:
        try:
            available = set((self.base / "cgroup.controllers").read_text().split())
        except OSError as exc:
            return dict.fromkeys(CONTROLLERS, f"cannot read {self.base / 'cgroup.controllers'}: {exc.strerror}")
        if not os.access(self.base, os.W_OK):
            return dict.fromkeys(CONTROLLERS, f"{self.base} cannot be written")
        reason = f"cgroup v2 does not hand their controllers down to {self.base}: see its cgroup.controllers"
        return {c: reason for c in CONTROLLERS if c not in available}

    def usable(self) -> bool:
        """Whether nodes get a cgroup here at all (to find and stop their processes by, if no limit)."""
        return os.access(self.base, os.W_OK) and (self.base / "cgroup.controllers").exists()

    @property
    def parent(self) -> Path:
        return self.base / PARENT

    def create(self, name: str, limits: Limits) -> None:
        if not self.usable():
            return
        held = self.held()
        self._hand_down(held)
        folder = self.parent / name
        folder.mkdir(exist_ok=True)
        values = {
            "cpu": ("cpu.weight", cpu_weight(limits.cpu_shares)),
            "memory": ("memory.max", limits.memory_mb * 1024 * 1024),
            "pids": ("pids.max", limits.pids),
        }
        for controller in held:
            write(folder / values[controller][0], values[controller][1])

    def _hand_down(self, controllers: list[str]) -> None:
        """Enable `controllers` in the base's and the parent's cgroup.subtree_control. A cgroup
        with processes cannot (but the root): the base's move into a leaf first."""
        wanted = [c for c in controllers if c not in enabled(self.base)]
        if wanted:
            if (self.base / "cgroup.type").exists():  # not the root, which has none
                self._move_processes_to_leaf()
            write(self.base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        self.parent.mkdir(exist_ok=True)
        wanted = [c for c in controllers if c not in enabled(self.parent)]
        if wanted:
            write(self.parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))

    def _move_processes_to_leaf(self) -> None:
        pids = (self.base / "cgroup.procs").read_text().split()
        leaf = self.base / PLATFORM_LEAF
        if pids:
            leaf.mkdir(exist_ok=True)
        for pid in pids:
            try:
                with open(leaf / "cgroup.procs", "a") as procs:  # one pid a write, as the kernel takes them
                    procs.write(pid)
            except OSError as exc:
                if exc.errno != errno.ESRCH:  # one that has exited meanwhile needs no move
                    raise CgroupError(f"cannot move process {pid} into {leaf}: {exc.strerror}") from exc

    def procs(self, name: str) -> list[Path]:
        return [self.parent / name / "cgroup.procs"] if self.usable() else []

    def own_procs(self) -> list[Path]:
        return [self.own / "cgroup.procs"]

    def remove_parent(self) -> None:
        try:
            self.parent.rmdir()
        except OSError:
            pass  # not there, or a node of another installation still has one


def enabled(folder: Path) -> set[str]:
    try:
        return set((folder / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()
