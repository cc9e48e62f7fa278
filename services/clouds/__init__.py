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

from services.clouds.isolation import Limits

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

    def to_userdata(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "secret": self.secret,
                "roles": self.roles,
                "control_url": self.control_url,
                "group": self.group,
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
        )
    raise CloudError(f"cloud {name!r} is not configured; this installation knows: {LOCAL!r}")


def describe(name: str | None = None) -> str:
    """One sentence on how this installation's nodes are run, for `manage.py up` to say once."""
    name = name or settings.CONPAAS_CLOUD
    if name != LOCAL:
        return f"nodes are VMs of the {name!r} cloud"
    cloud = get_cloud(name)
    if cloud.isolation is not None:
        return (
            f"local nodes are isolated: a Unix user, a network namespace on {cloud.isolation.network.net} "
            f"and cgroups each, homes under {cloud.isolation.node_root}"
        )
    return (
        f"local nodes are NOT isolated ({cloud.shared_reason}): they run as this platform's own user on "
        "127.0.0.1, so tenant code can read the platform's files and reach other tenants; run as root "
        "for isolation (see README, 'Isolation')"
    )


def create_node(cloud: NodeDriver, config: BootConfig) -> CloudNode:
    try:
        return cloud.create_node(name=config.name, size=None, image=None, ex_userdata=config.to_userdata())
    except Exception as exc:  # libcloud raises many types; the node is failed whatever the type
        raise CloudError(f"the cloud could not create node {config.name}: {exc}") from exc


def find_node(cloud: NodeDriver, provider_id: str) -> CloudNode | None:
    return next((n for n in cloud.list_nodes() if n.id == provider_id), None)
