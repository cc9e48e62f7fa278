"""Isolated nodes' cgroup limits: which hierarchy a machine mounts, the v1 and v2 writers (against
temporary trees shaped like each, and a real cgroup2 mount where there is one), and what
`./run up` and CONPAAS_LOCAL_ISOLATION=required do when a limit cannot be set."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from conpaas_common.waiting import wait_until
from services.clouds import CloudError, describe
from services.clouds import isolation as isolation_module
from services.clouds import local as local_module
from services.clouds.limits import (
    Cgroups,
    CgroupsV1,
    CgroupsV2,
    Limits,
    cpu_weight,
    detect,
    this_machine,
)
from services.clouds.local import LocalNodeDriver

V1 = """\
25 20 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,pids
"""
V2 = """\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
# This machine's kind: the controllers on v1, a unified hierarchy beside them holding none of them.
HYBRID = V1 + "32 25 0:30 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:16 - cgroup2 cgroup2 rw\n"
PROC_CGROUP = "0::/system.slice/conpaas.service\n4:memory:/system.slice/conpaas.service\n3:pids:/\n2:cpu,cpuacct:/a\n"


def v2_tree(root: Path, controllers: str = "cpuset cpu io memory hugetlb pids", root_cgroup: bool = True) -> Path:
    """A folder shaped like a cgroup2 mount's (the kernel's files the writer reads); not the root
    cgroup, it has a cgroup.type and holds the platform's processes."""
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("101\n102\n")
    if not root_cgroup:
        (root / "cgroup.type").write_text("domain\n")
    return root


def rmdir_as_cgroupfs(folder: Path) -> None:
    """cgroupfs removes a cgroup's interface files with its folder: a temporary tree's are deleted first."""
    for file in folder.iterdir():
        if file.is_file():
            file.unlink()


def test_it_maps_cpu_shares_to_cpu_weight_as_runc_does():
    assert [cpu_weight(s) for s in (2, 512, 1024, 262144)] == [1, 20, 39, 10000]
    assert cpu_weight(0) == 1 and cpu_weight(10**7) == 10000, "out of v1's range: its ends"


def test_it_detects_v1_and_reads_each_controllers_own_cgroup():
    cgroups = detect(V1, PROC_CGROUP)
    assert isinstance(cgroups, CgroupsV1)
    assert cgroups.own == {
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct/a"),
        "memory": Path("/sys/fs/cgroup/memory/system.slice/conpaas.service"),
        "pids": Path("/sys/fs/cgroup/pids"),
    }


def test_it_detects_v2_on_a_unified_hierarchy():
    cgroups = detect(V2, PROC_CGROUP)
    assert isinstance(cgroups, CgroupsV2)
    assert cgroups.base == Path("/sys/fs/cgroup/system.slice/conpaas.service")


def test_it_keeps_v1_on_a_hybrid_machine():
    assert isinstance(detect(HYBRID, PROC_CGROUP), CgroupsV1)


def test_it_finds_the_own_cgroup_below_a_containers_mount_root():
    mounted = V2.replace(" 0:23 / /sys/fs/cgroup ", " 0:23 /docker/abc /sys/fs/cgroup ")
    assert detect(mounted, "0::/docker/abc/app\n").base == Path("/sys/fs/cgroup/app")


def test_with_no_cgroup_mounted_every_limit_is_missing():
    cgroups = detect(V2.splitlines()[0], PROC_CGROUP)
    assert type(cgroups) is Cgroups
    assert cgroups.problem() == (
        "the CPU weight, memory and process count limits do not hold (no cgroup hierarchy is mounted)"
    )


def test_the_v2_writer_gives_a_node_its_limits_in_a_leaf_and_removes_it(tmp_path):
    cgroups = CgroupsV2(v2_tree(tmp_path / "cg"))
    assert cgroups.problem() == ""
    cgroups.create("conpaas-n5", Limits(cpu_shares=512, memory_mb=256, pids=100))

    base = tmp_path / "cg"
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (base / "conpaas" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    node = base / "conpaas" / "conpaas-n5"
    assert {f.name: f.read_text() for f in node.iterdir()} == {
        "cpu.weight": "20",
        "memory.max": str(256 * 1024 * 1024),
        "pids.max": "100",
    }
    assert not (base / "conpaas-platform").exists(), "the root cgroup may hold processes: none moved"
    assert cgroups.procs("conpaas-n5") == [node / "cgroup.procs"]

    rmdir_as_cgroupfs(node)
    cgroups.remove("conpaas-n5")
    assert not node.exists()
    rmdir_as_cgroupfs(base / "conpaas")
    cgroups.remove_parent()
    assert not (base / "conpaas").exists()


def test_the_v2_writer_moves_the_platforms_processes_into_a_leaf_before_handing_controllers_down(tmp_path):
    base = v2_tree(tmp_path / "cg", root_cgroup=False)
    CgroupsV2(base).create("conpaas-n2", Limits())
    assert (base / "conpaas-platform" / "cgroup.procs").read_text() == "101102", "one pid a write"
    assert (base / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    # The platform's processes, now in the leaf, find the same nodes' parent.
    assert CgroupsV2(base / "conpaas-platform").parent == base / "conpaas"


def test_the_v2_writer_names_the_limits_its_parent_does_not_hand_down_and_sets_the_others(tmp_path):
    base = v2_tree(tmp_path / "cg", controllers="cpu io")
    cgroups = CgroupsV2(base)
    assert cgroups.problem() == (
        "the memory and process count limits do not hold (cgroup v2 does not hand their controllers down "
        f"to {base}: see its cgroup.controllers)"
    )
    cgroups.create("conpaas-n3", Limits())
    assert sorted(f.name for f in (base / "conpaas" / "conpaas-n3").iterdir()) == ["cpu.weight"]
    assert (base / "cgroup.subtree_control").read_text() == "+cpu"


def test_the_v1_writer_gives_a_node_a_cgroup_in_each_hierarchy(tmp_path):
    own = {c: tmp_path / c / "platform" for c in ("cpu", "memory", "pids")}
    for folder in own.values():
        folder.mkdir(parents=True)
    cgroups = CgroupsV1(own)
    cgroups.create("conpaas-n4", Limits(cpu_shares=512, memory_mb=64, pids=50))
    assert (own["cpu"] / "conpaas" / "conpaas-n4" / "cpu.shares").read_text() == "512"
    assert (own["memory"] / "conpaas" / "conpaas-n4" / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (own["pids"] / "conpaas" / "conpaas-n4" / "pids.max").read_text() == "50"
    assert len(cgroups.procs("conpaas-n4")) == 3
    for path in cgroups.procs("conpaas-n4"):
        rmdir_as_cgroupfs(path.parent)
    cgroups.remove("conpaas-n4")
    assert not any((folder / "conpaas" / "conpaas-n4").exists() for folder in own.values())


def test_the_v1_writer_names_a_controller_that_is_not_mounted(tmp_path):
    (tmp_path / "cpu").mkdir()
    assert CgroupsV1({"cpu": tmp_path / "cpu"}).problem().startswith("the memory and process count limits do not hold")


@pytest.fixture
def unlimited_isolation(monkeypatch):
    """Nodes could be isolated (user, namespace) but no cgroup controller is mounted."""
    monkeypatch.setattr(local_module, "unavailable_reason", lambda node_root: "")
    monkeypatch.setattr(isolation_module, "this_machine", lambda: Cgroups())


def test_required_isolation_starts_no_node_without_its_limits(tmp_path, unlimited_isolation):
    driver = LocalNodeDriver(str(tmp_path / "nodes"), ex_isolation="required", ex_node_root=str(tmp_path / "roots"))
    userdata = json.dumps({"name": "n1", "roles": ["backend"], "control_url": "http://127.0.0.1:1", "secret": "s"})
    message = (
        "CONPAAS_LOCAL_ISOLATION=required, but the CPU weight, memory and process count limits do not hold "
        "(no cgroup hierarchy is mounted): node n1 is not started"
    )
    with pytest.raises(CloudError, match=message.replace("(", r"\(").replace(")", r"\)")):
        driver.create_node("n1", ex_userdata=userdata)
    with pytest.raises(CloudError, match="build sandbox b1 is not started"):
        driver.ex_build_sandbox("b1", "http://127.0.0.1:1/index/")
    assert not (tmp_path / "nodes").exists() and not (tmp_path / "roots").exists(), "nothing was made"


def test_up_says_which_limits_do_not_hold(settings, unlimited_isolation):
    settings.CONPAAS_CLOUD, settings.CONPAAS_LOCAL_ISOLATION = "local", "auto"
    said = describe()
    assert said.startswith("local nodes are isolated")
    assert said.endswith(
        "; but the CPU weight, memory and process count limits do not hold (no cgroup hierarchy is mounted)"
    )
    settings.CONPAAS_LOCAL_ISOLATION = "required"
    assert describe().endswith("; CONPAAS_LOCAL_ISOLATION=required: no node will start")


def real_cgroup2() -> CgroupsV2 | None:
    """The unified hierarchy's root cgroup, where this test may make (and remove) one of its own."""
    cgroups = this_machine()
    if isinstance(cgroups, CgroupsV1):
        mounts = Path("/proc/self/mountinfo").read_text()
        unified = [line for line in mounts.splitlines() if " - cgroup2 " in line]
        cgroups = detect("\n".join(unified), Path("/proc/self/cgroup").read_text()) if unified else None
    if not isinstance(cgroups, CgroupsV2) or not cgroups.usable() or (cgroups.base / "cgroup.type").exists():
        return None  # not the root: its processes would be moved, and not moved back
    return cgroups


@pytest.mark.skipif(real_cgroup2() is None, reason="no writable cgroup2 root cgroup here")
def test_the_v2_writer_on_a_real_cgroup2_mount():
    cgroups, name = real_cgroup2(), f"conpaas-test-{os.getpid()}"
    had_parent = cgroups.parent.exists()
    sleeper = None
    try:
        cgroups.create(name, Limits(cpu_shares=512, memory_mb=256, pids=64))
        (procs,) = cgroups.procs(name)
        sleeper = subprocess.Popen(["sh", "-c", 'echo $$ > "$0" && exec sleep 60', str(procs)])
        joined = wait_until(lambda: procs.read_text().split() == [str(sleeper.pid)], timeout=5)
        assert joined, "the process is in the node's cgroup"
        values = {"cpu.weight": "20", "memory.max": str(256 << 20), "pids.max": "64"}
        for controller in cgroups.held():  # none where v1 holds them all (a hybrid machine)
            limit = {"cpu": "cpu.weight", "memory": "memory.max", "pids": "pids.max"}[controller]
            assert (procs.parent / limit).read_text().strip() == values[limit]
    finally:
        if sleeper:
            sleeper.kill()
            sleeper.wait()
        cgroups.remove(name)
        if not had_parent:
            cgroups.remove_parent()
    assert not (cgroups.parent / name).exists()
