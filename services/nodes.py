"""Booting and destroying nodes through the cloud driver; each step writes an Event."""

import secrets

from django.conf import settings

from images.conpaas_agent.waiting import wait_until
from services import agent, clouds
from services.choices import NodeState, Outcome
from services.clouds import BootConfig, CloudError, create_node, find_node
from services.errors import OperationFailed
from services.models import Event, Node, Service

# Where the agent and the router listen on a VM; the local cloud gives each node its own ports.
VM_AGENT_PORT = 8470
VM_HTTP_PORT = 80


def boot_node(service: Service, roles: list[str], operation=None) -> Node:
    node = Node.objects.create(
        service=service,
        name=f"{service.name}-{secrets.token_hex(3)}",
        cloud=settings.CONPAAS_CLOUD,
        is_proxy="proxy" in roles,
        is_backend="backend" in roles,
    )
    Event.record(service, "node.boot", f"booting node {node.name} ({', '.join(roles)})", operation=operation)
    try:
        cloud = clouds.get_cloud(node.cloud)
        cloud_node = create_node(
            cloud, BootConfig(node.name, node.secret, roles, settings.CONPAAS_URL, group=f"service-{service.pk}")
        )
    except CloudError as exc:
        fail_node(node, str(exc), operation)
    node.provider_id = cloud_node.id
    node.address = (cloud_node.public_ips or cloud_node.private_ips)[0]
    node.agent_port = cloud_node.extra.get("agent_port", VM_AGENT_PORT)
    node.http_port = cloud_node.extra.get("http_port", VM_HTTP_PORT)
    # Where users reach the router when it is not the node's own address (a published local router).
    node.public_address = cloud_node.extra.get("public_address", "")
    node.public_port = cloud_node.extra.get("public_http_port")
    node.save(update_fields=["provider_id", "address", "agent_port", "http_port", "public_address", "public_port"])
    wait_for_agent(node, operation)
    node.state = NodeState.RUNNING
    node.save(update_fields=["state"])
    Event.record(
        service, "node.boot", f"node {node.name} is up at {node.address}", Outcome.SUCCEEDED, operation=operation
    )
    return node


def wait_for_agent(node: Node, operation=None) -> None:
    client = agent.client_for(node)
    last_error = ""

    def answered() -> str:
        """ "up", "refused" (an answer that is not a welcome: stop waiting), or "" (no answer yet)."""
        nonlocal last_error
        try:
            client.status(timeout=2)
            return "up"
        except agent.AgentError as exc:
            last_error = str(exc)
            return "" if exc.unreachable else "refused"

    if wait_until(answered, settings.CONPAAS_BOOT_TIMEOUT, interval=0.1) == "up":
        return
    fail_node(
        node, f"node {node.name} did not come up within {settings.CONPAAS_BOOT_TIMEOUT} s: {last_error}", operation
    )


def fail_node(node: Node, error: str, operation=None):
    node.state, node.error = NodeState.FAILED, error
    node.save(update_fields=["state", "error"])
    Event.record(node.service, "node.boot", error, Outcome.FAILED, operation=operation)
    raise OperationFailed(error)


def destroy_node(node: Node, operation=None) -> None:
    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYING)
    try:
        cloud = clouds.get_cloud(node.cloud)
        cloud_node = find_node(cloud, node.provider_id) if node.provider_id else None
        if cloud_node is not None:
            cloud.destroy_node(cloud_node)
    except Exception as exc:  # a cloud error leaves the node for the next attempt
        Node.objects.filter(pk=node.pk).update(state=NodeState.FAILED, error=str(exc))
        raise OperationFailed(f"could not destroy node {node.name}: {exc}") from exc
    node.instances.all().delete()
    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYED)
    Event.record(node.service, "node.destroy", f"destroyed node {node.name}", Outcome.SUCCEEDED, operation=operation)
