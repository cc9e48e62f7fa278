"""Booting, checking and destroying nodes through the cloud driver; each step writes an Event.

Clouds fail now and then, so a boot is tried CONPAAS_BOOT_ATTEMPTS times, each attempt a new
node, pausing CONPAAS_BOOT_BACKOFF seconds after the first failure and twice as long after each
next one. An attempt fails when the cloud refuses the node, when the cloud says the node stopped
while booting (the local cloud knows the moment its agent exits), or when its agent does not
answer within CONPAAS_BOOT_TIMEOUT. Its event quotes the node's last log lines, and its node is
destroyed at once: a failed attempt leaves nothing behind.
"""

import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from conpaas_common.waiting import wait_until
from services import agent, clouds
from services.choices import NodeState, Outcome
from services.clouds import BootConfig, CloudError, RouterPlace, create_node, find_node
from services.errors import OperationFailed
from services.models import Event, Node, Service

# Where the agent and the router listen on a VM; the local cloud gives each node its own ports.
VM_AGENT_PORT = 8470
VM_HTTP_PORT = 80
# How often a boot asks the cloud whether the node still runs (its agent is asked every 0.1 s).
CLOUD_POLL = 1.0
LOG_LINES = 5
# How long the self-healing check waits for an agent's answer.
CHECK_TIMEOUT = 3

# The one pause between boot attempts: tests put a recorder here, so nothing really sleeps.
pause = time.sleep


class BootFailed(Exception):
    """One boot attempt failed; the message says why, with the node's last log lines."""


@dataclass(frozen=True)
class Backoff:
    attempts: int
    first: float  # the pause after the first failed attempt; each next one is twice as long
    cap: float = 60.0

    @classmethod
    def from_settings(cls) -> "Backoff":
        return cls(max(1, settings.CONPAAS_BOOT_ATTEMPTS), max(0.0, settings.CONPAAS_BOOT_BACKOFF))

    def pause_after(self, failed: int) -> float:
        return min(self.cap, self.first * 2 ** (failed - 1))


def boot_node(
    service: Service, roles: list[str], operation=None, router_at: RouterPlace | None = None, scratch: bool = False
) -> Node:
    """A new running node with `roles`, or OperationFailed once every attempt failed.

    `router_at` replaces a dead router where it was, when the cloud can; a `scratch` node is a
    temporary one of the platform's (Node.scratch)."""
    backoff = Backoff.from_settings()
    for attempt in range(1, backoff.attempts + 1):
        node = Node.objects.create(
            service=service,
            name=f"{service.name}-{secrets.token_hex(3)}",
            cloud=settings.CONPAAS_CLOUD,
            is_proxy="proxy" in roles,
            is_backend="backend" in roles,
            scratch=scratch,
        )
        of = f" (attempt {attempt} of {backoff.attempts})" if backoff.attempts > 1 else ""
        Event.record(service, "node.boot", f"booting node {node.name} ({', '.join(roles)}){of}", operation=operation)
        try:
            boot_attempt(node, router_at)
        except BootFailed as exc:
            discard(node, str(exc))
            if attempt == backoff.attempts:
                error = f"{exc} (gave up after {attempt} attempts)" if attempt > 1 else str(exc)
                Event.record(service, "node.boot", error, Outcome.FAILED, operation=operation)
                raise OperationFailed(error) from None
            wait = backoff.pause_after(attempt)
            Event.record(
                service, "node.boot", f"{exc}; trying again in {wait:g} s", Outcome.FAILED, operation=operation
            )
            pause(wait)
            continue
        Event.record(
            service, "node.boot", f"node {node.name} is up at {node.address}", Outcome.SUCCEEDED, operation=operation
        )
        return node
    raise AssertionError("unreachable: the last attempt returns or raises")


def node_group(service_id: int) -> str:
    """The cloud's group of a service's nodes: they reach each other on every port."""
    return f"service-{service_id}"


def open_links(service: Service, targets: list[Service]) -> None:
    """Let `service`'s nodes reach its linked services' nodes on every port (a data server's),
    now and as nodes come and go. Isolated local nodes only: a VM's security groups are the
    operator's in this release (README, Data services)."""
    cloud = clouds.get_cloud(settings.CONPAAS_CLOUD)
    isolation = getattr(cloud, "isolation", None)
    if isolation is not None:
        isolation.firewalls.set_links(node_group(service.pk), [node_group(t.pk) for t in targets])


def agent_roles(node: Node) -> list[str]:
    """The roles its agent takes: a data service's router node runs its router (and a sentinel)
    as instances, never the HTTP router of web services."""
    return ["backend"] if node.service.is_data else node.roles


def boot_attempt(node: Node, router_at: RouterPlace | None) -> None:
    config = BootConfig(
        node.name,
        node.secret,
        agent_roles(node),
        settings.CONPAAS_URL,
        group=node_group(node.service_id),
        runtime=node.service.runtime,
    )
    try:
        cloud = clouds.get_cloud(node.cloud)
        cloud_node = create_node(cloud, config, router_at)
    except CloudError as exc:
        raise BootFailed(str(exc)) from exc
    node.provider_id = cloud_node.id
    node.address = (cloud_node.public_ips or cloud_node.private_ips)[0]
    node.agent_port = cloud_node.extra.get("agent_port", VM_AGENT_PORT)
    node.http_port = cloud_node.extra.get("http_port", VM_HTTP_PORT)
    # Where users reach the router when it is not the node's own address (a published local router).
    node.public_address = cloud_node.extra.get("public_address", "")
    node.public_port = cloud_node.extra.get("public_http_port")
    node.save(update_fields=["provider_id", "address", "agent_port", "http_port", "public_address", "public_port"])
    wait_for_agent(node, cloud, cloud_node)
    node.state = NodeState.RUNNING
    node.save(update_fields=["state"])


def wait_for_agent(node: Node, cloud, cloud_node) -> None:
    """Until the node's agent answers; BootFailed as soon as the cloud says the node stopped,
    the agent refuses us, or at CONPAAS_BOOT_TIMEOUT."""
    client = agent.client_for(node)
    last_error, dead, next_look = "", "", 0.0

    def answered() -> str:
        """ "up", "refused" (an answer that is not a welcome), "dead", or "" (no answer yet)."""
        nonlocal last_error, dead, next_look
        try:
            client.status(timeout=2)
            return "up"
        except agent.AgentError as exc:
            last_error = str(exc)
            if not exc.unreachable:
                return "refused"
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + CLOUD_POLL
            dead = clouds.death(find_node(cloud, node.provider_id))
            return "dead" if dead else ""
        return ""

    outcome = wait_until(answered, settings.CONPAAS_BOOT_TIMEOUT, interval=0.1)
    if outcome == "up":
        return
    if outcome == "dead":
        why = f"node {node.name} stopped while booting ({dead})"
    elif outcome == "refused":
        why = f"node {node.name} refused the control plane: {last_error}"
    else:
        why = f"node {node.name} did not come up within {settings.CONPAAS_BOOT_TIMEOUT} s: {last_error}"
    raise BootFailed(why + last_lines(cloud, cloud_node))


def last_lines(cloud, cloud_node) -> str:
    lines = clouds.log_tail(cloud, cloud_node, LOG_LINES)
    return "; its last log lines: " + " | ".join(lines) if lines else ""


def discard(node: Node, error: str) -> None:
    """Destroy a failed attempt's node at once (OperationFailed if the cloud cannot)."""
    remove_from_cloud(node)
    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYED, error=error)


def remove_from_cloud(node: Node) -> None:
    """Destroy the node's machine; a cloud error leaves the node failed, for the next attempt."""
    try:
        cloud = clouds.get_cloud(node.cloud)
        cloud_node = find_node(cloud, node.provider_id, node.name)
        if cloud_node is not None:
            cloud.destroy_node(cloud_node)
    except Exception as exc:
        Node.objects.filter(pk=node.pk).update(state=NodeState.FAILED, error=str(exc))
        raise OperationFailed(f"could not destroy node {node.name}: {exc}") from exc


def destroy_node(node: Node, operation=None) -> None:
    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYING)
    remove_from_cloud(node)
    node.instances.all().delete()
    Node.objects.filter(pk=node.pk).update(state=NodeState.DESTROYED)
    Event.record(node.service, "node.destroy", f"destroyed node {node.name}", Outcome.SUCCEEDED, operation=operation)


class CloudView:
    """What the clouds say of nodes, asked once per cloud (a listing) and only when needed."""

    def __init__(self):
        self.listings: dict[str, tuple] = {}

    def death(self, node: Node) -> tuple[str, str]:
        """Why the node's cloud says it is dead ('' when it does not, or cannot say), and its
        last log lines."""
        try:
            if node.cloud not in self.listings:
                cloud = clouds.get_cloud(node.cloud)
                self.listings[node.cloud] = (cloud, {n.id: n for n in cloud.list_nodes()})
            cloud, listed = self.listings[node.cloud]
        except Exception:  # a cloud that cannot say: the agent's silence decides, after the grace
            return "", ""
        cloud_node = listed.get(node.provider_id)
        dead = clouds.death(cloud_node)
        return dead, (last_lines(cloud, cloud_node) if dead and cloud_node else "")


def check_agent(node: Node, view: CloudView) -> tuple[str, dict | None]:
    """Ask a running node's agent how it is: ('', its status) when it answers; (why the node is
    dead, None) when it does not and its cloud says it stopped or is gone, or after
    CONPAAS_HEAL_GRACE seconds of silence; ('', None) while it may still come back."""
    try:
        status = agent.client_for(node, timeout=CHECK_TIMEOUT).status(timeout=CHECK_TIMEOUT)
    except agent.AgentError as exc:
        if not exc.unreachable:
            return "", None  # it answered, if not with a status: it lives
        dead, lines = view.death(node)
        if dead:
            return f"its agent does not answer and {dead}{lines}", None
        now = timezone.now()
        if node.unreachable_since is None:
            node.unreachable_since = now
            Node.objects.filter(pk=node.pk, unreachable_since__isnull=True).update(unreachable_since=now)
        if (now - node.unreachable_since).total_seconds() >= settings.CONPAAS_HEAL_GRACE:
            return f"its agent has not answered for {settings.CONPAAS_HEAL_GRACE} s ({exc})", None
        return "", None
    if node.unreachable_since is not None:
        Node.objects.filter(pk=node.pk).update(unreachable_since=None)
    return "", status
