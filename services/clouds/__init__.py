"""Clouds are apache-libcloud NodeDrivers; the rest of the code sees nodes only through them.

The `local` cloud (the embedded default) is our own driver, registered with libcloud's
`set_driver`, whose nodes are agent process groups on this host. A real provider is used the
same way, its VMs booted by cloud-init running the same boot script (images/boot.sh).
"""

import json
from dataclasses import dataclass

from django.conf import settings
from libcloud.compute.base import Node as CloudNode
from libcloud.compute.base import NodeDriver
from libcloud.compute.providers import DRIVERS, get_driver, set_driver
from libcloud.compute.types import NodeState

from services import platform_store
from services.clouds.limits import Limits

LOCAL = "local"
LOCAL_PROVIDER = "conpaas_local"


class CloudError(Exception):
    """A cloud refused or failed an action; the message says which and why."""


def register_drivers() -> None:
    if LOCAL_PROVIDER not in DRIVERS:
        set_driver(LOCAL_PROVIDER, "services.clouds.local", "LocalNodeDriver")


@dataclass(frozen=True)
class BootConfig:
    """What a node needs to know at boot; travels as user data (never logged: it holds the secret)."""

    name: str
    secret: str
    roles: list[str]
    control_url: str
    group: str = ""  # the nodes that may reach each other on every port (a service's)
    runtime: str = "python"  # which runtime's packages a VM installs (images/recipes/<runtime>.txt)

    def to_userdata(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "secret": self.secret,
                "roles": self.roles,
                "control_url": self.control_url,
                "group": self.group,
                "runtime": self.runtime,
            }
        )


def get_cloud(name: str | None = None) -> NodeDriver:
    name = name or settings.CONPAAS_CLOUD
    if name == LOCAL:
        return get_driver(LOCAL_PROVIDER)(
            str(settings.CONPAAS_NODES),
            ex_isolation=settings.CONPAAS_LOCAL_ISOLATION,
            ex_node_root=str(settings.CONPAAS_LOCAL_NODE_ROOT),
            ex_network=settings.CONPAAS_LOCAL_NETWORK,
            ex_publish=settings.CONPAAS_LOCAL_PUBLISH,
            ex_limits=Limits(
                cpu_shares=settings.CONPAAS_LOCAL_CPU_SHARES,
                memory_mb=settings.CONPAAS_LOCAL_MEMORY_MB,
                pids=settings.CONPAAS_LOCAL_PIDS,
            ),
            ex_fail_rate=settings.CONPAAS_LOCAL_FAIL_RATE,
            ex_boot_delay=settings.CONPAAS_LOCAL_BOOT_DELAY,
            ex_backup_store=platform_store.endpoint(),
        )
    raise CloudError(f"cloud {name!r} is not configured; this installation knows: {LOCAL!r}")


def describe(name: str | None = None) -> str:
    """One sentence on how this installation's nodes are run, for `manage.py up` to say once."""
    name = name or settings.CONPAAS_CLOUD
    if name != LOCAL:
        return f"nodes are VMs of the {name!r} cloud"
    cloud = get_cloud(name)
    if cloud.isolation is not None:
        said = (
            f"local nodes are isolated: a Unix user, a network namespace on {cloud.isolation.network.net} "
            f"and cgroups each, homes under {cloud.isolation.node_root}"
        )
        if cloud.limits_problem:
            refused = cloud.limits_required and "; CONPAAS_LOCAL_ISOLATION=required: no node will start"
            said += f"; but {cloud.limits_problem}{refused or ''}"
        return said
    return (
        f"local nodes are NOT isolated ({cloud.shared_reason}): they run as this platform's own user on "
        "127.0.0.1, so tenant code can read the platform's files and reach other tenants; run as root "
        "for isolation (see README, 'Isolation')"
    )


@dataclass(frozen=True)
class RouterPlace:
    """Where a dead node's router was: its address and port, and the host port it was published
    at (CONPAAS_LOCAL_PUBLISH), so that its replacement keeps the service's URL."""

    address: str
    http_port: int
    public_port: int | None = None


def create_node(cloud: NodeDriver, config: BootConfig, router_at: RouterPlace | None = None) -> CloudNode:
    """Create a node; `router_at` asks a cloud that can keep addresses (`ex_keeps_addresses`, the
    local one) to put the node's router there."""
    keep = {}
    if router_at and getattr(cloud, "ex_keeps_addresses", False):
        keep = {
            "ex_address": router_at.address,
            "ex_http_port": router_at.http_port,
            "ex_public_port": router_at.public_port,
        }
    try:
        return cloud.create_node(name=config.name, size=None, image=None, ex_userdata=config.to_userdata(), **keep)
    except Exception as exc:  # libcloud raises many types; the node is failed whatever the type
        raise CloudError(f"the cloud could not create node {config.name}: {exc}") from exc


def find_node(cloud: NodeDriver, provider_id: str, name: str = "") -> CloudNode | None:
    """The cloud's node by its id, or by its name when the id is unknown (a creation that failed
    half-way may still have made the machine)."""
    if provider_id:
        return next((n for n in cloud.list_nodes() if n.id == provider_id), None)
    return next((n for n in cloud.list_nodes() if name and n.name == name), None)


# What a cloud says of a node that can no longer run its agent.
DEAD_STATES = {
    NodeState.STOPPED: "stopped",
    NodeState.STOPPING: "stopping",
    NodeState.TERMINATED: "terminated",
    NodeState.ERROR: "in error",
}


def death(cloud_node: CloudNode | None) -> str:
    """Why the cloud says this node is dead ('' when it does not): it stopped (the local cloud
    knows the moment the node's agent exits), or the cloud no longer has it."""
    if cloud_node is None:
        return "the cloud no longer has it"
    if cloud_node.state in DEAD_STATES:
        return f"the cloud reports it {DEAD_STATES[cloud_node.state]}"
    return ""


def log_tail(cloud: NodeDriver, cloud_node: CloudNode, lines: int = 10) -> list[str]:
    """The node's last log lines, when its cloud can tell (the local one: boot.log, agent.log)."""
    tail = getattr(cloud, "ex_log_tail", None)
    try:
        return tail(cloud_node, lines) if tail else []
    except Exception:  # only a hint in an event: its absence is no error
        return []
