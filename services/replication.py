"""What a replicated data service's members say of their replication (workflows/replication.py
makes them): who is the primary now, each member's role and lag, saved on the nodes for pages
to read, and a failover noticed as an event.

The primary is the one the service's sentinels name (a majority of those that answer): Redis
Sentinel decides failovers, never the control plane. Without sentinels (one server) it is the
server that says it is one. A mysql service (Galera) has no primary of the engine's: every synced
member writes, and its "primary" is the member the router sends the service's port to now.
"""

import logging
from collections import Counter
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from conpaas_common.wire import MAX_REPLICATED_SERVERS, MIN_GALERA_SERVERS
from services import agent
from services.choices import FAILOVER_MANAGERS, REPLICATED_RUNTIMES, NodeState, Outcome, Runtime, ServiceState
from services.models import Event, Node, Service

log = logging.getLogger("conpaas.replication")

# The instances of a replicated service's nodes: the server on each server node, the router on
# the router node; for redis a sentinel on each of both once the service has two servers or more,
# for postgresql the etcd of its Patroni members on the router node.
SERVER, ROUTER, SENTINEL, DCS = "server", "router", "sentinel", "dcs"


def cluster_spec(service: Service, node: Node) -> dict | None:
    """A replicated PostgreSQL server's Patroni membership: the service's cluster, the node's
    member name, the etcd on its router; None for a service without a router (made before)."""
    router = service.live_nodes().filter(is_proxy=True).exclude(state=NodeState.FAILED).first()
    dcs_port = router.data_details.get("dcs_port") if router else None
    if not dcs_port:
        return None
    cluster = {
        "scope": f"conpaas-{service.pk}",
        "member": node.name,
        "dcs": {"host": router.address, "port": dcs_port},
        "synchronous": service.synchronous,
    }
    if api_port := node.data_details.get("api_port"):
        cluster["api_port"] = api_port
    return cluster


def servers_problem(runtime: str, nodes: int) -> str:
    """Why a replicated service cannot run `nodes` servers ("" when it can): the scale API and a
    manifest's `nodes` say the same."""
    if runtime == Runtime.MYSQL and not (nodes == 1 or MIN_GALERA_SERVERS <= nodes <= MAX_REPLICATED_SERVERS):
        if not 1 < nodes < MIN_GALERA_SERVERS:
            return (
                f"a mysql service runs 1 server or a Galera cluster of {MIN_GALERA_SERVERS} to "
                f"{MAX_REPLICATED_SERVERS}, not {nodes}"
            )
        return (
            f"a mysql service runs 1 server or a Galera cluster of {MIN_GALERA_SERVERS} to {MAX_REPLICATED_SERVERS}, "
            f"not {nodes}: a cluster of {nodes} loses its majority, and takes no write, when one member is cut off"
        )
    if not 1 <= nodes <= MAX_REPLICATED_SERVERS:
        return f"a {runtime} service runs 1 to {MAX_REPLICATED_SERVERS} servers, not {nodes}"
    return ""


def galera_spec(service: Service, node: Node, bootstrap: bool = False) -> dict:
    """A mysql server's Galera membership: the service's cluster, the node's member name, and the
    members it joins when it starts: every other server that has run one (Galera skips those that
    are down). The first has none, and starts the cluster; `bootstrap` starts it again from this
    member's data (workflows/replication.py: the most advanced of a cluster stopped whole)."""
    peers = [
        {"host": other.address, "port": other.data_details["galera_port"]}
        for other in server_nodes(service)
        if other != node and other.data_details.get("galera_port")
    ]
    return {"galera": {"cluster": f"conpaas-{service.pk}", "member": node.name}, "peers": peers, "bootstrap": bootstrap}


def server_nodes(service: Service) -> list[Node]:
    """The service's running server nodes, oldest first."""
    nodes = service.live_nodes().filter(state=NodeState.RUNNING, is_backend=True, scratch=False)
    return list(nodes.order_by("created", "id"))


def member_of(service: Service, where: dict | None, nodes: list[Node] | None = None) -> Node | None:
    """The server node at `where` ({host, port}, as a sentinel names it)."""
    if not where:
        return None
    for node in nodes if nodes is not None else server_nodes(service):
        if node.address == where.get("host") and node.data_port == where.get("port"):
            return node
    return None


def sentinels_say(service: Service, nodes: list[Node]) -> Node | None:
    """The primary a majority of the sentinels that answer name, if they do."""
    said = []
    for node in nodes:
        try:
            answer = agent.client_for(node, timeout=5).get_instance(SENTINEL).get("replication") or {}
        except agent.AgentError:
            continue
        if answer.get("master"):
            said.append((answer["master"]["host"], answer["master"]["port"]))
    if not said:
        return None
    (host, port), votes = Counter(said).most_common(1)[0]
    return member_of(service, {"host": host, "port": port}) if votes * 2 > len(said) else None


def observe(service: Service) -> dict[Node, dict]:
    """Each running server node's replication as its agent says it now."""
    seen = {}
    for node in server_nodes(service):
        try:
            seen[node] = agent.client_for(node, timeout=5).get_instance(SERVER).get("replication") or {}
        except agent.AgentError as exc:
            seen[node] = {"role": None, "unreachable": True, "detail": f"its agent did not answer: {exc.detail}"}
    return seen


def primary(service: Service, seen: dict[Node, dict] | None = None) -> Node | None:
    """The service's primary now: the sentinels' choice (with two servers or more, each runs
    one, and so does the router), or the one server that says it is one."""
    seen = observe(service) if seen is None else seen
    if service.runtime == Runtime.MYSQL:
        synced = [node for node, state in seen.items() if state.get("role") == "synced"]
        writer = router_says(service).get("primary")
        return next((node for node in synced if node.name == writer), synced[0] if synced else None)
    if len(seen) > 1 and service.runtime == Runtime.REDIS:
        router = service.router_node()
        if (chosen := sentinels_say(service, [*seen, *([router] if router else [])])) is not None:
            return chosen
    primaries = [node for node, state in seen.items() if state.get("role") == "primary"]
    return primaries[0] if len(primaries) == 1 else None


def router_says(service: Service) -> dict:
    """Where the service's router sends connections now ({primary, replicas}: member names), {}
    when it does not answer."""
    router = service.router_node()
    if router is None:
        return {}
    try:
        return agent.client_for(router, timeout=5).get_instance(ROUTER).get("replication") or {}
    except agent.AgentError:
        return {}


def role_of(node: Node, state: dict, primary_node: Node | None) -> str | None:
    """A member's role as saved: a server that still says primary when the sentinels chose
    another is an old primary about to be turned into a replica. A Galera member's is its state
    (synced, donor, joining): each writes."""
    if node.service.runtime == Runtime.MYSQL:
        return state.get("role")
    if node == primary_node:
        return "primary"
    said = state.get("role")
    return "old-primary" if said == "primary" and primary_node is not None else said


def refresh(service: Service) -> Node | None:
    """Save each member's replication on its node; a primary other than the one saved before
    (alive or dead) is a failover, recorded as an event with what is known of it. Returns the
    primary."""
    seen = observe(service)
    now = primary(service, seen)
    lag_before = now.replication.get("lag_s") if now is not None else None
    saved_primaries = list(service.live_nodes().filter(replication__role="primary"))
    for node, state in seen.items():
        saved = {**state, "role": role_of(node, state, now)}
        if state.get("unreachable") and node != now:
            # Silent, not demoted: it keeps the role it had, so that its failover is still told.
            saved = {**node.replication, "detail": state["detail"]}
        if node.replication != saved:
            Node.objects.filter(pk=node.pk).update(replication=saved)
            node.replication = saved
    if now is None:
        return None
    if service.runtime == Runtime.MYSQL:
        tell_writer_moved(service, now, seen)
        return now
    for before in (node for node in saved_primaries if node != now):
        if before not in seen or seen[before].get("unreachable"):  # dead: it said nothing of its own
            silent = next((node for node in seen if node == before), before)
            Node.objects.filter(pk=before.pk).update(replication={**silent.replication, "role": "old-primary"})
        tell_failover(service, now, before, lag_before)
    return now


def tell_failover(service: Service, now: Node, before: Node, lag_before: float | None) -> None:
    """The failover's event: who took over from whom, and what may be lost."""
    behind = f"{lag_before} s" if lag_before is not None else "an unknown time"
    manager = FAILOVER_MANAGERS[service.runtime]
    if service.synchronous:
        lost = f"Commits are synchronous: {now.name} had every commit {before.name} acknowledged, none is lost"
    else:
        lost = (
            f"Replication is asynchronous: what {before.name} acknowledged in its last moments may be lost "
            f"({now.name} was last seen {behind} behind it)"
        )
    message = f"{now.name} is the primary now, in place of {before.name} ({manager} promoted it); "
    Event.record(service, "failover", message + f"the service's address is unchanged. {lost}", Outcome.SUCCEEDED)


def tell_writer_moved(service: Service, now: Node, seen: dict[Node, dict]) -> None:
    """A mysql service's router sending writes to another member than before: its event. Galera
    certifies each commit on every member before it is acknowledged: none is lost."""
    router = service.router_node()
    if router is None:
        return
    before = router.replication.get("writer")
    if before == now.name:
        return
    Node.objects.filter(pk=router.pk).update(replication={**router.replication, "writer": now.name})
    router.replication = {**router.replication, "writer": now.name}
    states = {node.name: state for node, state in seen.items()}
    if before is None or states.get(before, {}).get("role") == "synced":
        # Not a failover: the router's checks came up in another order (a new router, a member
        # added), and `balance first` took the first member up; the one before still serves.
        return
    why = "it left the cluster" if before not in states else "it is not synced"
    message = (
        f"writes go to {now.name} now, in place of {before} ({why}); the service's address is unchanged. "
        "Galera had every commit on every member before it was acknowledged: none is lost"
    )
    Event.record(service, "failover", message, Outcome.SUCCEEDED)


def refresh_due(max_age: float) -> int:
    """Refresh every running replicated service whose router was last asked `max_age` seconds
    ago or more, each claimed with a conditional UPDATE of its router's `router_checked` first
    (passes that overlap never ask twice). Returns how many."""
    now = timezone.now()
    stale = Q(router_checked__isnull=True) | Q(router_checked__lte=now - timedelta(seconds=max_age))
    routers = Node.objects.filter(
        is_proxy=True,
        state=NodeState.RUNNING,
        service__state=ServiceState.RUNNING,
        service__runtime__in=REPLICATED_RUNTIMES,
        service__locked_by__isnull=True,
    )
    refreshed = 0
    for service_id in set(routers.filter(stale).values_list("service_id", flat=True)):
        if not routers.filter(stale, service_id=service_id).update(router_checked=now):
            continue
        service = Service.objects.filter(pk=service_id).first()
        if service is not None:
            try:
                refresh(service)
            except Exception:  # one service's trouble never stops the pass
                log.exception("could not refresh the replication of %s", service.name)
            refreshed += 1
    return refreshed
