"""The network of isolated nodes: the bridge and its address plan, the host's nftables rules
(each control plane's port on the gateway, published routers), each node's namespace on the
bridge, and each node's firewall (nftables inside its namespace).

A node lives in its own network namespace, on a bridge (`conpaas0`, 10.77.0.0/16 by default)
with an address of its own and no route anywhere else; the control plane reaches it over that
bridge, as it reaches a VM over a cloud network."""

import ipaddress
import json
import os
from pathlib import Path

from services.clouds.host_commands import IsolationError, run
from services.clouds.slots import Slot, all_slots, registry_lock

BRIDGE = "conpaas0"
AGENT_PORT = 8470
HTTP_PORT = 80


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

    def mac(self, slot: int) -> str:
        """The node's hardware address, one per address (locally administered: 02:00 and the IPv4
        address's 4 bytes). A router replaced at its dead one's address answers at the same MAC,
        so the neighbour caches of the host and of the other nodes, which still hold the dead
        one's, stay right; with a new random MAC it went unanswered until those entries expired
        (up to ~50 s), unless the bridge happened to change its own MAC, which flushes them."""
        return ":".join(["02", "00", *(f"{byte:02x}" for byte in ipaddress.ip_address(self.address(slot)).packed)])

    def add_namespace(self, slot: Slot) -> None:
        """The node's network namespace, with its end of a veth pair on the bridge at its address."""
        ns, veth, peer = slot.netns, slot.veth, f"cpp{slot.number}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", veth, "master", BRIDGE, "up")
        run("ip", "link", "set", peer, "netns", ns)
        inside = ("ip", "netns", "exec", ns)
        run(*inside, "ip", "link", "set", peer, "name", "eth0")
        prefix = self.net.prefixlen
        run(*inside, "ip", "link", "set", "eth0", "address", self.mac(slot.number))
        run(*inside, "ip", "addr", "add", f"{self.address(slot.number)}/{prefix}", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        # Replies to clients of a published router leave through the gateway; the node's own
        # firewall lets it open no connection off the bridge's network.
        run(*inside, "ip", "route", "add", "default", "via", self.gateway)
        # The router listens on port 80, as on a VM, without root.
        run(*inside, "sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0")
        # The router opens a connection per request to the instances on this node's own address
        # (gunicorn's sync workers close each one), so its side of each ends in TIME_WAIT. Linux
        # reuses those for a new connect() on loopback only (tcp_tw_reuse=2); here every connect()
        # searched the port range past them instead (perf: __inet_hash_connect and
        # __inet_check_established, most of HAProxy's 1.7 ms of CPU a request).
        run(*inside, "sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1")

    def remove_namespace(self, slot: Slot) -> None:
        run("ip", "netns", "del", slot.netns, check=False)  # takes the veth pair with it
        run("ip", "link", "del", slot.veth, check=False)

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

    def converge_host(self, slots: list[Slot]) -> None:
        """The host's rules for every installation's nodes, in one atomic step: each control plane's
        port on the gateway forwarded to it, and each published router's host port to the router.
        Forwarding through the bridge is allowed for published connections only."""
        nat, published = [], []
        # Each control plane's port, and each data node's backup store on this host (workflows/backups.py).
        for host, port in sorted({s.control for s in slots} | {s.store for s in slots if s.store}):
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


class Firewalls:
    """Each node's firewall, set by root inside its namespace, that the node cannot change: it
    accepts connections from its service's other nodes (its security group), from the host, and
    on its router's public port; it may open connections to its group, to other nodes' routers,
    and to the control plane's port at the bridge's gateway. A group's nodes also reach every
    port of the groups it links (a data server), and are answered."""

    def __init__(self, installation: str, network: Network):
        self.installation = installation
        self.network = network

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

    def converge(self, group: str) -> None:
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

        store = f"ip daddr {gateway} tcp dport {slot.store[1]} accept" if slot.store else ""

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
    {store}
    ip daddr {net} tcp dport {HTTP_PORT} accept
  }}
}}
"""
        run("ip", "netns", "exec", slot.netns, "nft", "-f", "-", input=ruleset)
