"""The local cloud driver: it stops exactly a node's processes, never what a forged pid file names;
it injects failures, knows when a node's agent exited, and keeps a replaced router's address."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from libcloud.compute.base import Node
from libcloud.compute.types import NodeState

from conpaas_common import client
from conpaas_common.procs import free_port
from conpaas_common.waiting import wait_until
from services.clouds import BootConfig, CloudError
from services.clouds.isolation import unavailable_reason
from services.clouds.local import LocalNodeDriver, group_has_live_member

NODE_ROOT = Path("/var/lib/conpaas/nodes")


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


def test_a_nodes_log_tail_names_its_files_and_leaves_out_the_agents_request_lines(tmp_path):
    home = make_node_dir(tmp_path, "n1")
    (home / "boot.log").write_text("Traceback (most recent call last):\n  OSError: no \x1b[31mhaproxy\n")
    (home / "agent.log").write_text(
        "2026-01-01 10:00:00,000 INFO conpaas_agent: agent n1 (roles backend) listening on 127.0.0.1:1\n"
        "2026-01-01 10:00:01,000 INFO conpaas_agent: GET /v1/status -> 200 (0 ms)\n"
    )
    driver = LocalNodeDriver(str(tmp_path))

    assert driver.ex_log_tail(Node("n1", "n1", None, [], [], driver), lines=5) == [
        "boot.log: Traceback (most recent call last):",
        "boot.log:   OSError: no ?[31mhaproxy",
        "agent.log: 2026-01-01 10:00:00,000 INFO conpaas_agent: agent n1 (roles backend) listening on 127.0.0.1:1",
    ]


# --- booting for real: fault injection, a dead agent noticed, a router's address kept ------------


def config(name: str, roles=("backend",)) -> str:
    return BootConfig(name, "s" * 32, list(roles), "http://127.0.0.1:9", group="service-test").to_userdata()


@contextlib.contextmanager
def driver_at(nodes: Path, **options):
    """A local cloud in `nodes`; every node it still has is destroyed at the end."""
    driver = LocalNodeDriver(str(nodes), **options)
    try:
        yield driver
    finally:
        for node in driver.list_nodes():
            driver.destroy_node(node, timeout=5)


def state_of(driver, name: str) -> str:
    return next(node.state for node in driver.list_nodes() if node.id == name)


def answers(node) -> bool:
    try:
        return (
            client.call(f"http://{node.public_ips[0]}:{node.extra['agent_port']}", "s" * 32, "GET", "/v1/status").status
            == 200
        )
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.parametrize("isolation", ["off", "auto"])
def test_injected_failures_alternate_and_leave_nothing_behind(tmp_path, isolation):
    if isolation == "auto" and unavailable_reason(NODE_ROOT):
        pytest.skip(f"local nodes are not isolated here: {unavailable_reason(NODE_ROOT)}")
    nodes = tmp_path / "nodes"
    with driver_at(nodes, ex_isolation=isolation, ex_fail_rate=1.0) as driver:
        with pytest.raises(CloudError, match="injected failure .* refused node refused-1"):
            driver.create_node("refused-1", ex_userdata=config("refused-1"))
        assert sorted(p.name for p in nodes.iterdir()) == [".creations"], "no home, no link"
        assert driver.isolation is None or driver.isolation.slot_of("refused-1") is None, "its slot is free again"

        dead = driver.create_node("dead-1", ex_userdata=config("dead-1"))
        wait_until(lambda: state_of(driver, "dead-1") == NodeState.STOPPED, 10, message="the node to stop")
        assert "boot.log: injected failure (CONPAAS_LOCAL_FAIL_RATE): the agent exits at once" in driver.ex_log_tail(
            dead
        )
        slot = driver.isolation.slot_of("dead-1") if driver.isolation else None
        driver.destroy_node(dead)
        assert not (nodes / "dead-1").exists()
        if slot is not None:
            assert driver.isolation.slot_of("dead-1") is None and not Path(f"/run/netns/{slot.netns}").exists()


@pytest.mark.integration
def test_a_node_whose_agent_was_killed_is_stopped_for_the_cloud(tmp_path):
    with driver_at(tmp_path / "nodes", ex_isolation="off") as driver:
        node = driver.create_node("n1", ex_userdata=config("n1"))
        wait_until(lambda: answers(node), 20, message="the agent to answer")
        assert state_of(driver, "n1") == NodeState.RUNNING
        os.kill(node.extra["pid"], signal.SIGKILL)
        wait_until(lambda: state_of(driver, "n1") == NodeState.STOPPED, 10, message="the node to stop")


@pytest.mark.integration
def test_a_boot_delay_keeps_the_node_booting(tmp_path):
    with driver_at(tmp_path / "nodes", ex_isolation="off", ex_boot_delay=2) as driver:
        node = driver.create_node("slow", ex_userdata=config("slow"))
        began = time.monotonic()
        assert state_of(driver, "slow") == NodeState.RUNNING and not answers(node)
        wait_until(lambda: answers(node), 20, message="the agent to answer")
        assert time.monotonic() - began >= 1.5


def test_a_router_keeps_its_port_and_a_taken_one_is_refused_without_leftovers(tmp_path):
    port = free_port()
    with driver_at(tmp_path / "nodes", ex_isolation="off") as driver:
        node = driver.create_node("r1", ex_userdata=config("r1"), ex_http_port=port)
        assert node.extra["http_port"] == port
        driver.destroy_node(node)
        with socket.create_server(("127.0.0.1", port)):
            with pytest.raises(CloudError, match=f"port {port} is in use"):
                driver.create_node("r2", ex_userdata=config("r2"), ex_http_port=port)
        assert list((tmp_path / "nodes").iterdir()) == []


@pytest.mark.integration
def test_an_isolated_router_keeps_its_address_and_published_port_and_a_held_one_is_refused(tmp_path):
    if unavailable_reason(NODE_ROOT):
        pytest.skip(f"local nodes are not isolated here: {unavailable_reason(NODE_ROOT)}")
    with driver_at(tmp_path / "nodes", ex_isolation="auto", ex_publish="192.0.2.1") as driver:
        first = driver.create_node("r1", ex_userdata=config("r1", ["proxy"]))
        address, published = first.public_ips[0], first.extra["public_http_port"]
        driver.destroy_node(first)

        again = driver.create_node(
            "r2", ex_userdata=config("r2", ["proxy"]), ex_address=address, ex_public_port=published
        )
        assert (again.public_ips[0], again.extra["public_http_port"]) == (address, published)
        with pytest.raises(CloudError, match=f"{address} is held by another node"):
            driver.create_node("r3", ex_userdata=config("r3"), ex_address=address)
        with pytest.raises(CloudError, match=f"port {published} is published for another node"):
            driver.create_node("r4", ex_userdata=config("r4", ["proxy"]), ex_public_port=published)
        assert not any(driver.isolation.slot_of(name) for name in ("r3", "r4"))
        assert {path.name for path in (tmp_path / "nodes").iterdir()} == {"r2"}
