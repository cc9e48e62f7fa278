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

    def to_userdata(self) -> str:
        return json.dumps(
            {"name": self.name, "secret": self.secret, "roles": self.roles, "control_url": self.control_url}
        )


def get_cloud(name: str | None = None) -> NodeDriver:
    name = name or settings.CONPAAS_CLOUD
    if name == LOCAL:
        return get_driver(LOCAL_PROVIDER)(str(settings.CONPAAS_NODES))
    raise CloudError(f"cloud {name!r} is not configured; this installation knows: {LOCAL!r}")


def create_node(cloud: NodeDriver, config: BootConfig) -> CloudNode:
    try:
        return cloud.create_node(name=config.name, size=None, image=None, ex_userdata=config.to_userdata())
    except Exception as exc:  # libcloud raises many types; the node is failed whatever the type
        raise CloudError(f"the cloud could not create node {config.name}: {exc}") from exc


def find_node(cloud: NodeDriver, provider_id: str) -> CloudNode | None:
    return next((n for n in cloud.list_nodes() if n.id == provider_id), None)
