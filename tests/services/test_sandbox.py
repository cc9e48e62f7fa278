"""Build sandboxes (services/clouds/sandbox.py) with real processes, and how the platform takes a
build's result out of one (versions/builds.py)."""

import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from conpaas_common.procs import pid_alive
from services.clouds.isolation import unavailable_reason
from services.clouds.local import LocalNodeDriver
from services.clouds.sandbox import MAX_LINE, SharedSandbox
from services.errors import QuotaExceeded
from versions.build_plans import BuildRefused
from versions.builds import _take


@pytest.fixture
def box(tmp_path):
    with SharedSandbox.make(tmp_path / "sandboxes", "build-test", "http://127.0.0.1:9/index/") as sandbox:
        yield sandbox
    assert not sandbox.home.exists(), "a closed sandbox leaves nothing"


def run(box, script: str, timeout: float = 20) -> tuple[int, list[str], float]:
    lines = []
    began = time.monotonic()
    code = box.run(["/bin/sh", "-c", script], box.home, {"PATH": "/usr/bin:/bin"}, timeout, lines.append)
    return code, lines, time.monotonic() - began


def test_a_step_streams_its_lines_and_answers_its_exit_code(box):
    code, lines, _ = run(box, "echo one; echo two >&2; exit 3")
    assert code == 3 and lines == ["one", "two"]


def test_a_step_past_its_time_is_stopped(box):
    code, lines, took = run(box, "echo begun; sleep 30", timeout=1)
    assert code == -9 and lines == ["begun", "stopped after 1 s"]
    assert took < 10


def test_what_a_step_leaves_running_is_stopped_with_it(box):
    """A child holding the step's output open would keep the build reading for ever."""
    code, lines, took = run(box, "sleep 30 & echo left a child")
    assert code == 0 and lines == ["left a child"] and took < 10


def test_a_line_without_end_is_cut(box):
    _, lines, _ = run(box, f"head -c {MAX_LINE * 3} /dev/zero | tr '\\\\0' x")
    assert max(len(line) for line in lines) == MAX_LINE


@pytest.mark.skipif(bool(unavailable_reason(Path("/var/lib/conpaas/nodes"))), reason="no isolation here")
def test_an_isolated_sandbox_stops_a_daemon_of_its_own_and_leaves_nothing(tmp_path):
    driver = LocalNodeDriver(str(tmp_path / "nodes"))
    sandbox = driver.ex_build_sandbox("build-test", "http://127.0.0.1:9/index/")
    try:
        slot = sandbox.slot
        assert sandbox.index_url == f"http://{driver.sandboxes.network.gateway}:9/index/"
        code, lines, took = run(sandbox, "setsid sleep 60 </dev/null & echo left a daemon; id -u")
        assert code == 0 and lines[0] == "left a daemon" and int(lines[1]) != 0 and took < 15
        alive = [pid for pid in driver.sandboxes.pids(slot) if pid_alive(pid)]
        assert alive == [], "the daemon left the session, not the sandbox's cgroups"
        registry = json.loads(slot.path.read_text())
        assert registry["kind"] == "build"
    finally:
        sandbox.close()
    assert not slot.path.exists() and not sandbox.home.exists()
    assert driver.ex_release_sandboxes() == 0


def packed(tmp_path: Path, members: dict) -> Path:
    path = tmp_path / "build.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, target in members.items():
            info = tarfile.TarInfo(name)
            if target is None:
                data = b"x"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
    return path


def test_the_platform_takes_a_plain_result_within_the_room_left(tmp_path):
    source = packed(tmp_path, {"hello.py": None})
    sha, size = _take(source, tmp_path / "stored.tar.gz", (10_000, 1))
    assert size == source.stat().st_size and (tmp_path / "stored.tar.gz").read_bytes() == source.read_bytes()
    assert len(sha) == 64


def test_a_result_over_the_room_left_is_refused_and_nothing_is_stored(tmp_path):
    source = packed(tmp_path, {"hello.py": None})
    with pytest.raises(QuotaExceeded, match=r"quota exceeded: storage_mb \(1\)"):
        _take(source, tmp_path / "stored.tar.gz", (10, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.tar.gz"]


def test_a_result_that_is_a_link_or_holds_one_is_refused(tmp_path):
    (tmp_path / "link.tar.gz").symlink_to("/etc/hostname")
    with pytest.raises(BuildRefused, match="missing"):
        _take(tmp_path / "link.tar.gz", tmp_path / "stored.tar.gz", (10**9, 1))
    with pytest.raises(BuildRefused, match="no plain file or folder"):
        _take(packed(tmp_path, {"etc": "/etc"}), tmp_path / "stored.tar.gz", (10**9, 1))
    os.mkfifo(tmp_path / "fifo.tar.gz")
    with pytest.raises(BuildRefused, match="not a plain file"):
        _take(tmp_path / "fifo.tar.gz", tmp_path / "stored.tar.gz", (10**9, 1))
    assert not (tmp_path / "stored.tar.gz").exists()
