"""Tenant isolation on the local cloud, as root: a probe app deployed by one user tries every
read, connection and signal that would reach the platform or another tenant, and is refused."""

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conpaas_common.waiting import wait_until
from services.clouds.isolation import unavailable_reason
from services.clouds.local import LocalNodeDriver
from services.clouds.network import AGENT_PORT
from tests.apps import label_app, probe_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(unavailable_reason(Path("/var/lib/conpaas/nodes"))),
        reason="local nodes are not isolated here: " + (unavailable_reason(Path("/var/lib/conpaas/nodes")) or ""),
    ),
]


@pytest.fixture(scope="module")
def tenants(control_plane):
    """Mallory's probe and Bob's ordinary app, each in production."""
    mallory, bob = control_plane.client("mallory"), control_plane.client("bob-tenant")
    probe = mallory.create_service("probe")
    victim = bob.create_service("victim")
    for api, service, archive in ((mallory, probe, probe_app()), (bob, victim, label_app("victim"))):
        version = api.upload(service["id"], archive, "v1").json()
        assert api.deploy(service["id"], "production", version["id"])["state"] == "succeeded"
    yield mallory.get(f"/api/v1/services/{probe['id']}/").json(), bob.get(f"/api/v1/services/{victim['id']}/").json()
    for api, service in ((mallory, probe), (bob, victim)):
        api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


def attempt(probe: dict, action: str, target: str = "") -> dict:
    response = requests.get(probe["url"], params={"action": action, "target": target}, timeout=15)
    assert response.status_code == 200, response.text
    return response.json()


def refused(probe: dict, action: str, target: str) -> str:
    outcome = attempt(probe, action, target)
    assert not outcome["ok"], f"tenant code could {action} {target}: {outcome}"
    return outcome["error"]


def node_of(control_plane, service: dict) -> tuple[Path, dict]:
    node = service["nodes"][0]
    home = control_plane.home / "nodes" / node["name"]
    return home, json.loads((home / "node.json").read_text())


def test_tenant_code_runs_as_its_own_user_at_a_lower_priority_in_its_nodes_cgroups(tenants):
    probe, _ = tenants
    me = attempt(probe, "whoami")["result"]
    assert me["uid"] != 0
    assert me["nice"] >= 10, "instances run below the router and the platform"
    assert "conpaas/conpaas-n" in me["cgroups"]
    assert not [name for name in me["environ"] if "SECRET" in name or name.startswith(("DJANGO", "DATABASE"))]


def test_a_nodes_router_reuses_time_wait_ports_for_its_connections_to_the_instances(tenants, control_plane):
    """A connection per request to the node's own address: without reuse, each connect() searches
    the port range past the TIME_WAIT ones (bench/router_overhead.py)."""
    _, victim = tenants
    home, _ = node_of(control_plane, victim)
    pid = (home / "agent.pid").read_text().strip()
    netns = subprocess.run(["ip", "netns", "identify", pid], capture_output=True, text=True, check=True).stdout.strip()
    assert netns.startswith("conpaas-n")
    sysctl = ["ip", "netns", "exec", netns, "sysctl", "-n", "net.ipv4.tcp_tw_reuse"]
    assert subprocess.run(sysctl, capture_output=True, text=True, check=True).stdout.strip() == "1"


def test_tenant_code_cannot_read_or_signal_the_platform(tenants, control_plane):
    probe, _ = tenants
    home = control_plane.home
    assert "PermissionError" in refused(probe, "read", str(home / "secret_key"))
    assert "PermissionError" in refused(probe, "list", str(home))
    assert "PermissionError" in refused(probe, "read", f"/proc/{control_plane.process.pid}/environ")
    assert "PermissionError" in refused(probe, "signal", str(control_plane.process.pid))
    # The platform's loopback is not the node's: its web server and this machine's PostgreSQL
    # cannot be reached there, nor through the gateway except on the control plane's port.
    port = urlsplit(control_plane.url).port
    refused(probe, "connect", f"127.0.0.1:{port}")
    refused(probe, "connect", "10.77.0.1:5432")
    refused(probe, "connect", "10.77.0.1:22")
    assert attempt(probe, "connect", f"10.77.0.1:{port}")["ok"], "the control plane's API is public, as on a cloud"


def test_tenant_code_cannot_reach_the_package_proxy_nor_the_package_index(tenants, control_plane):
    """Only a build's sandbox reaches the package proxy (tests/e2e/test_builds.py); an instance
    reaches neither it nor the index it caches."""
    probe, _ = tenants
    proxy = control_plane.package_proxy_port
    # While a build runs, the gateway forwards the proxy's port (to the build's sandbox only).
    with LocalNodeDriver(str(control_plane.home / "nodes")).ex_build_sandbox(
        "build-probe", f"http://127.0.0.1:{proxy}/index/"
    ) as sandbox:
        lines = []
        fetch = (
            "import urllib.request as u\n"
            f"request = u.Request('{sandbox.index_url}pip/', headers={{'Accept': 'text/html'}})\n"
            "print(u.urlopen(request, timeout=20).status)"
        )
        sandbox.run(["/usr/bin/python3", "-c", fetch], sandbox.home, {"PATH": "/usr/bin:/bin"}, 60, lines.append)
        assert lines == ["200"], f"the sandbox reaches the proxy: {lines[-3:]}"
        refused(probe, "connect", f"10.77.0.1:{proxy}")
        refused(probe, "connect", f"127.0.0.1:{proxy}")
    assert "gaierror" in refused(probe, "connect", "pypi.org:443"), "no name service either"


def test_tenant_code_cannot_reach_another_tenant_except_through_its_router(tenants, control_plane):
    probe, victim = tenants
    victim_home, victim_config = node_of(control_plane, victim)
    address = victim_config["agent_bind"].rsplit(":", 1)[0]
    state = json.loads((victim_home / "state.json").read_text())
    instance_name, instance = next(iter(state["instances"].items()))
    real_home = Path(victim_config["home"])

    assert "PermissionError" in refused(probe, "read", str(real_home / "node.json"))
    assert "PermissionError" in refused(probe, "list", str(real_home))
    assert "PermissionError" in refused(probe, "read", str(victim_home / "node.json"))
    assert "PermissionError" in refused(probe, "signal", (victim_home / "agent.pid").read_text().strip())
    assert "PermissionError" in refused(probe, "signal", str(instance["pid"]))
    refused(probe, "connect", f"{address}:{instance['port']}")
    # The unix socket its router connects to is in the victim node's own home (0700).
    socket_path = real_home / "instances" / instance_name / "http.sock"
    assert socket_path.is_socket()
    assert "PermissionError" in refused(probe, "connect-unix", str(socket_path))
    refused(probe, "connect", f"{address}:{AGENT_PORT}")
    assert attempt(probe, "connect", f"{address}:80")["ok"], "another service's router is public"


@pytest.fixture
def another_machine():
    """A network namespace on a link of its own to this host, standing for another machine of the
    LAN: 192.168.251.2, reaching this host at 192.168.251.1. Removed, with its link, at the end."""
    name, link = f"cpt-client-{os.getpid()}", f"cptc{os.getpid() % 100000}"
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p"],
        ["ip", "link", "set", f"{link}p", "netns", name],
        ["ip", "addr", "add", "192.168.251.1/30", "dev", link],
        ["ip", "link", "set", link, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", "192.168.251.2/30", "dev", f"{link}p"],
        ["ip", "netns", "exec", name, "ip", "link", "set", f"{link}p", "up"],
        ["ip", "netns", "exec", name, "ip", "route", "add", "default", "via", "192.168.251.1"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield name, "192.168.251.1"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(forwarding)


def test_a_published_router_answers_other_machines_on_a_port_of_this_host(tmp_path, another_machine):
    """CONPAAS_LOCAL_PUBLISH: the router of an isolated node is forwarded from a port of this host."""
    client, host_address = another_machine
    driver = LocalNodeDriver(str(tmp_path / "nodes"), ex_publish=host_address)
    userdata = {"name": "pub-1", "secret": "s" * 64, "roles": ["proxy"], "control_url": "http://127.0.0.1:9"}
    node = driver.create_node("pub-1", ex_userdata=json.dumps(userdata))
    try:
        assert node.extra["public_address"] == host_address
        url = f"http://{host_address}:{node.extra['public_http_port']}/"
        fetch = (
            "import sys, urllib.request as u\ntry: u.urlopen(sys.argv[1], timeout=5)\nexcept Exception as e: print(e)"
        )

        def answered_from_the_other_machine() -> str:
            command = ["ip", "netns", "exec", client, "/usr/bin/python3", "-c", fetch, url]
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout

        # The router answers (503: it has nothing to route to yet), from there and from here.
        wait_until(lambda: "503" in answered_from_the_other_machine(), timeout=20, message="the published router")
        assert requests.get(url, timeout=5).status_code == 503
        # Only the router is published: the node's agent is not reachable from there.
        agent = f"http://{node.public_ips[0]}:{AGENT_PORT}/"
        command = ["ip", "netns", "exec", client, "/usr/bin/python3", "-c", fetch, agent]
        assert "timed out" in subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    finally:
        driver.destroy_node(node)
