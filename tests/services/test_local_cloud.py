"""The local cloud driver stops exactly a node's processes, never what a forged pid file names."""

import json
import subprocess
import sys

from libcloud.compute.base import Node

from services.clouds.local import LocalNodeDriver, group_has_live_member


def make_node_dir(nodes, name: str) -> object:
    home = nodes / name
    home.mkdir(parents=True)
    (home / "node.json").write_text(json.dumps({"agent_bind": "127.0.0.1:1", "http_bind": "127.0.0.1:2"}))
    return home


def sleeper(cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=cwd, start_new_session=True)


def test_it_stops_the_process_group_of_the_node(tmp_path):
    home = make_node_dir(tmp_path, "n1")
    process = sleeper(home)  # runs in the node's directory, like an instance
    try:
        (home / "agent.pid").write_text(str(process.pid))
        driver = LocalNodeDriver(str(tmp_path))
        driver.destroy_node(Node("n1", "n1", None, [], [], driver), timeout=5)
        process.wait(timeout=10)
        assert not group_has_live_member(process.pid)
        assert not home.exists()
    finally:
        process.kill()
        process.wait()


def test_it_does_not_kill_a_group_a_forged_pid_file_names(tmp_path):
    home = make_node_dir(tmp_path / "nodes", "n1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bystander = sleeper(elsewhere)  # say, the control plane
    try:
        (home / "agent.pid").write_text(str(bystander.pid))
        driver = LocalNodeDriver(str(tmp_path / "nodes"))
        driver.destroy_node(Node("n1", "n1", None, [], [], driver), timeout=5)
        assert bystander.poll() is None, "the bystander still runs"
        assert not home.exists()
    finally:
        bystander.kill()
        bystander.wait()
