"""Replicated data services (postgresql, redis, mysql; README, Replication and failover): a router
node, the service's one address for its whole life, in front of `backend_nodes` server nodes, one
primary and its replicas (standbys). The engine's own manager fails the primary over by itself,
with or without the control plane, and the router follows by its own health checks: Patroni
members agreeing through an etcd on the router node for postgresql; for redis, from two servers,
Redis Sentinel on every server node and on the router node (a majority survives the loss of any
one node). A mysql service's servers are a Galera cluster: every member writes, the router sends
the service's port to one synced member at a time and its replica port to all; a cluster stopped
whole is started again from its most advanced member (`start_galera`).

`converge` makes what the database says true and can run again at any time: the router booted
(where a dead one was, on its port), server nodes booted or removed, servers started (a new one
as a replica of the primary now), the sentinels and the router's members set, new replicas
waited for until they are in sync. Creating, scaling and healing the service all call it.
"""

import time

from django.utils import timezone

from services import agent, replication
from services.choices import FAILOVER_MANAGERS, NodeState, Outcome, Runtime
from services.clouds import RouterPlace
from services.data_servers import start_server
from services.errors import OperationFailed
from services.models import Event, Node, Service
from services.nodes import boot_node, destroy_node
from services.replication import DCS, ROUTER, SENTINEL, SERVER

# How long a converge waits for the sentinels to name a primary when the servers run but none
# says it is one (a failover under way), and for new replicas to be in sync.
PRIMARY_WAIT = 30
ROUTER_WAIT = 30
SYNC_WAIT = 900
# How long a converge waits for a Galera cluster's members to drop one that died (its suspect
# timeout, 3 s, and inactive timeout, 15 s: runtimes/mysql.py).
MEMBERSHIP_WAIT = 60


def converge(service: Service, operation, router_at: Node | None = None) -> str:
    """The service as its rows say; returns what it did, in words. `router_at`: a dead router
    node whose address and port the new router takes."""
    began = time.monotonic()
    router = ensure_router_node(service, operation, router_at)
    if service.runtime == Runtime.POSTGRESQL:
        ensure_dcs(service, router, operation)
    servers = ensure_server_nodes(service, operation)
    if service.runtime == Runtime.MYSQL:
        synced = start_galera(service, servers, operation)
    else:
        synced = [start_servers(service, servers, operation)]
    started = time.monotonic()
    set_sentinels(service, servers, router, synced[0], operation)
    set_router(service, router, servers, operation, port=router_at.data_port if router_at else None)
    primary = await_router(service, router, synced, operation)
    synced = await_replicas(service, primary, operation)
    replication.refresh(service)
    galera = service.runtime == Runtime.MYSQL
    said = f"{primary.name} takes the writes" if galera else f"{primary.name} is the primary"
    if len(servers) > 1:
        said += f", {len(servers) - 1} other member(s) synced" if galera else f", {len(servers) - 1} replica(s) in sync"
        if synced:
            said += f" {time.monotonic() - started:.1f} s after they started"
    return f"{said}; the router {router.name} is the service's address ({time.monotonic() - began:.1f} s in all)"


def ensure_router_node(service: Service, operation, dead: Node | None = None) -> Node:
    router = service.live_nodes().filter(is_proxy=True).exclude(state=NodeState.FAILED).first()
    if router is not None:
        return router
    place = RouterPlace(dead.address, dead.http_port) if dead is not None and dead.address else None
    operation.set_progress("booting the router node" + (f" where {dead.name} was" if dead else ""))
    return boot_node(service, ["proxy"], operation, place)


def ensure_server_nodes(service: Service, operation) -> list[Node]:
    """Boot server nodes up to `backend_nodes`, or remove replicas beyond it (newest first,
    never the primary): the router and the sentinels forget them first."""
    for failed in service.live_nodes().filter(state=NodeState.FAILED, is_backend=True, scratch=False):
        destroy_node(failed, operation)
    servers = replication.server_nodes(service)
    while len(servers) < service.backend_nodes:
        operation.set_progress(f"booting server node {len(servers) + 1} of {service.backend_nodes}")
        servers.append(boot_node(service, ["backend"], operation))
    if len(servers) > service.backend_nodes:
        primary = replication.primary(service)
        removable = [node for node in reversed(servers) if node != primary]
        going = removable[: len(servers) - service.backend_nodes]
        staying = [node for node in servers if node not in going]
        router = service.router_node()
        if router is not None:
            set_router(service, router, staying, operation)
        if primary is not None:
            set_sentinels(service, staying, router, primary, operation)
        for node in going:
            what = "member" if service.runtime == Runtime.MYSQL else "replica"
            operation.set_progress(f"removing {what} {node.name}")
            if service.runtime == Runtime.MYSQL:
                leave_galera(node)
            destroy_node(node, operation)
        servers = staying
    return servers


def leave_galera(node: Node) -> None:
    """A Galera member stopped cleanly before its node goes: it leaves the cluster, which counts
    its quorum without it (members killed at once would leave the rest without a majority)."""
    try:
        agent.client_for(node, timeout=120).delete_instance(SERVER)
    except agent.AgentError:
        pass  # a member that does not answer is dead already: the others have seen it go


def put_part(node: Node, name: str, spec: dict, failure: str) -> dict:
    """Start (or reconfigure) one of the service's parts on `node`: its instance, as the agent says it."""
    try:
        return agent.client_for(node).put_instance(name, spec)
    except agent.AgentError as exc:
        raise OperationFailed(f"{failure} on {node.name}: {exc.detail}") from None


def ensure_dcs(service: Service, router: Node, operation) -> None:
    """The etcd of a postgresql service's Patroni members, on its router node, on its port."""
    spec = {"runtime": "etcd"}
    if port := router.data_details.get("dcs_port"):
        spec["port"] = port
    operation.set_progress(f"starting the members' etcd on {router.name}")
    answer = put_part(router, DCS, spec, "the etcd did not start")
    router.data_details = {**router.data_details, "dcs_port": answer["port"]}
    Node.objects.filter(pk=router.pk).update(data_details=router.data_details)


def reset_dcs(service: Service, operation) -> None:
    """A postgresql service's etcd emptied before a server restored from a backup starts: its
    Patroni then takes the cluster over as it is (an earlier point in time than the etcd knew,
    which a standby's rules would refuse to promote)."""
    router = service.live_nodes().filter(is_proxy=True, state=NodeState.RUNNING).first()
    if service.runtime != Runtime.POSTGRESQL or router is None or not router.data_details.get("dcs_port"):
        return
    operation.set_progress(f"emptying the members' etcd on {router.name}")
    try:
        agent.client_for(router).delete_instance(DCS, purge=True)
    except agent.AgentError as exc:
        if exc.status != 404:
            raise OperationFailed(f"the etcd on {router.name} could not be emptied: {exc.detail}") from None
    ensure_dcs(service, router, operation)


def start_servers(service: Service, servers: list[Node], operation) -> Node:
    """Every server running; returns the primary. The first server of a new service is the
    primary; any other starts as a replica of the primary now (a Patroni member clones it)."""
    running = [node for node in servers if node.data_port]
    if not running:
        operation.set_progress(f"starting the {service.runtime} server on {servers[0].name}")
        start_server(service, servers[0])
    primary = wait_for_primary(service, operation)
    start_server(service, primary)  # started again if it stopped: the agent leaves a running one
    for node in servers:
        if node != primary:
            operation.set_progress(f"starting {node.name} as a replica of {primary.name}")
            replica_of = {"host": primary.address, "port": primary.data_port}
            start_server(service, node, replica_of=replica_of if service.runtime == Runtime.REDIS else None)
    return primary


def start_galera(service: Service, servers: list[Node], operation) -> list[Node]:
    """A mysql service's servers as a Galera cluster; returns its synced members. The first
    server of a new service starts the cluster; every other joins a synced member and is given
    the data by a state transfer. A cluster none of whose members runs in a primary component
    (stopped whole: a power cut, every server killed) starts again from its most advanced
    member (the highest seqno each says), which Galera will not do by itself."""
    seen = replication.observe(service)
    synced = [node for node in servers if seen.get(node, {}).get("role") == "synced"]
    if not synced:
        synced = [bootstrap_galera(service, servers, seen, operation)]
    elif any(node not in synced for node in servers):
        seen = await_galera_membership(service, synced, operation)
    for node in servers:
        if node in synced or seen.get(node, {}).get("role") in ("donor", "joining"):
            continue  # synced, or on its way
        began = time.monotonic()
        operation.set_progress(f"{node.name} joining the Galera cluster (a state transfer from a synced member)")
        first = not node.data_port
        start_server(service, node)
        said = "joined" if first else "rejoined"
        message = f"{node.name} {said} the Galera cluster and is synced ({time.monotonic() - began:.1f} s)"
        Event.record(service, "galera.join", message, Outcome.SUCCEEDED, operation=operation)
        synced.append(node)
    return synced


def await_galera_membership(service: Service, synced: list[Node], operation) -> dict[Node, dict]:
    """Until the synced members count only one another (a member that just died is out of their
    view, Galera's suspect timeout after its death): a member that joins while the others are
    still dropping the dead one is refused its view, and holds up their commits while it tries."""
    deadline = time.monotonic() + MEMBERSHIP_WAIT
    while True:
        seen = replication.observe(service)
        sizes = {node.name: seen.get(node, {}).get("cluster_size") for node in synced}
        if all(size == len(synced) for size in sizes.values()):
            return seen
        if time.monotonic() > deadline:
            said = ", ".join(f"{name} counts {size}" for name, size in sizes.items())
            raise OperationFailed(f"the Galera members do not agree on their cluster after {MEMBERSHIP_WAIT} s: {said}")
        operation.set_progress(f"waiting for the Galera members to drop a dead member ({len(synced)} left)")
        time.sleep(0.5)


def bootstrap_galera(service: Service, servers: list[Node], seen: dict[Node, dict], operation) -> Node:
    """The member a cluster with no synced member starts from: the only one of a new service, or
    the most advanced (ties: the oldest). The others that run, outside any primary component,
    are stopped to join it afresh."""
    started = [node for node in servers if node.data_port]
    if not started:
        operation.set_progress(f"starting the Galera cluster on {servers[0].name}")
        start_server(service, servers[0])
        return servers[0]
    positions = {node: seen.get(node, {}).get("seqno", -1) for node in started}
    most = max(started, key=lambda node: positions[node])  # max keeps the first of equals: the oldest
    for node in started:
        if seen.get(node, {}).get("cluster"):  # it runs, cut off: it joins the new component
            leave_galera(node)
    operation.set_progress(f"starting the Galera cluster again from {most.name} (seqno {positions[most]})")
    start_server(service, most, bootstrap=True)
    others = ", ".join(f"{node.name} at {positions[node]}" for node in started if node != most) or "none"
    unknown = [node.name for node in started if seen.get(node, {}).get("unreachable")]
    message = (
        f"no member of the Galera cluster was running in a primary component: started it again from "
        f"{most.name}, the most advanced (seqno {positions[most]}; others: {others})"
    )
    if unknown:
        message += f"; {', '.join(unknown)} did not answer, and may hold later commits"
    Event.record(service, "galera.bootstrap", message, Outcome.SUCCEEDED, operation=operation)
    return most


def wait_for_primary(service: Service, operation) -> Node:
    deadline = time.monotonic() + PRIMARY_WAIT
    while (primary := replication.primary(service)) is None:
        if time.monotonic() > deadline:
            manager = FAILOVER_MANAGERS[service.runtime]
            raise OperationFailed(f"no server of {service.name} is its primary ({manager}) after {PRIMARY_WAIT} s")
        operation.set_progress("waiting for a primary")
        time.sleep(1)
    return primary


def quorum(sentinels: int) -> int:
    return sentinels // 2 + 1


def set_sentinels(service: Service, servers: list[Node], router: Node | None, primary: Node, operation) -> None:
    """A redis service's sentinels: on every server node and the router node from two servers;
    none below. (A postgresql service's Patroni members need none: they agree through etcd.)"""
    if service.runtime != Runtime.REDIS:
        return
    nodes = [*servers, *([router] if router is not None else [])]
    if len(servers) < 2:
        for node in nodes:
            try:
                agent.client_for(node).delete_instance(SENTINEL)
            except agent.AgentError as exc:
                if exc.status != 404:
                    raise OperationFailed(f"the sentinel on {node.name} did not stop: {exc.detail}") from None
        return
    spec = {
        "runtime": "sentinel",
        "password": service.password,
        "monitor": {"host": primary.address, "port": primary.data_port},
        "quorum": quorum(len(nodes)),
    }
    operation.set_progress(f"starting {len(nodes)} sentinels (quorum {spec['quorum']})")
    for node in nodes:
        put_part(node, SENTINEL, spec, "the sentinel did not start")


def set_router(service: Service, router: Node, servers: list[Node], operation, port: int | None = None) -> None:
    """The router's members: every server, each checked for its role there."""
    spec = {
        "runtime": "tcp_router",
        "engine": service.runtime,
        "password": service.password,
        "members": [member(node) for node in servers],
    }
    if port or router.data_port:
        spec["port"] = port or router.data_port
    if replica_port := router.data_details.get("replica_port"):
        spec["replica_port"] = replica_port
    operation.set_progress(f"setting the router's members ({len(servers)})")
    answer = put_part(router, ROUTER, spec, "the router did not take its members")
    details = {**router.data_details, "replica_port": answer["details"]["replica_port"]}
    Node.objects.filter(pk=router.pk).update(data_port=answer["port"], data_details=details)
    router.data_port, router.data_details = answer["port"], details


def member(node: Node) -> dict:
    """A server as its router checks it: a Patroni member through its REST API's port, a Galera
    member through its galera_check's."""
    answer = {"name": node.name, "host": node.address, "port": node.data_port}
    if check_port := node.data_details.get("api_port") or node.data_details.get("check_port"):
        answer["check_port"] = check_port
    return answer


def await_router(service: Service, router: Node, primaries: list[Node], operation) -> Node:
    """Until the router's checks send the service's port to the primary (a Galera cluster's: any
    synced member), which it returns: the operation ends when a client is served, not refused by
    a router that has not checked its members yet."""
    deadline = time.monotonic() + ROUTER_WAIT
    names = " or ".join(node.name for node in primaries)
    while True:
        try:
            said = agent.client_for(router, timeout=10).get_instance(ROUTER).get("replication") or {}
        except agent.AgentError as exc:
            said = {"detail": exc.detail}
        if chosen := next((node for node in primaries if node.name == said.get("primary")), None):
            return chosen
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"the router on {router.name} does not reach the primary {names} after {ROUTER_WAIT} s: "
                f"it sends the service's port to {said.get('primary') or 'no server'}"
            )
        operation.set_progress(f"waiting for the router to reach the primary {names}")
        time.sleep(0.1)


def await_replicas(service: Service, primary: Node, operation) -> bool:
    """Until every other server is a replica (standby) whose link to the primary is up and whose
    first sync is done (a Patroni member still cloning says no role yet); whether any was waited
    for. What a member that is not there yet says is in the progress."""
    deadline = time.monotonic() + SYNC_WAIT
    waited = False
    while True:
        seen = replication.observe(service)
        behind = {
            node.name: state.get("detail") or state.get("state") or "not in sync yet"
            for node, state in seen.items()
            if node != primary and not (state.get("role") in ("replica", "standby", "synced") and state.get("in_sync"))
        }
        if service.synchronous and len(seen) > 1 and not any(state.get("sync_standby") for state in seen.values()):
            # Until Patroni names the standby commits wait for, no failover is possible (it
            # promotes that standby alone): the operation ends once there is one.
            behind["the synchronous standby"] = "none named yet"
        if not behind:
            return waited
        said = "; ".join(f"{name}: {why}" for name, why in behind.items())
        if time.monotonic() > deadline:
            raise OperationFailed(f"not in sync with the primary within {SYNC_WAIT} s: {said}")
        waited = True
        operation.set_progress(f"waiting for the replicas to sync with the primary ({said})"[:200])
        time.sleep(0.5)


def heal(service: Service, dead: list[Node], operation) -> str:
    """Dead nodes replaced: a server by a new replica of the primary now (the sentinels have
    failed over already when it was the primary), the router where it was, on its port."""
    began = timezone.now()
    replication.refresh(service)  # the failover's event, when it is over already
    # A dead primary whose failover is still under way: its event once converge finds the new one.
    untold = [n for n in Node.objects.filter(pk__in=[n.pk for n in dead]) if n.replication.get("role") == "primary"]
    lags = [n.replication.get("lag_s") for n in replication.server_nodes(service) if n not in dead]
    dead_router = next((node for node in dead if node.is_proxy), None)
    for node in dead:  # its address is free for its replacement
        destroy_node(node, operation)
    said = converge(service, operation, router_at=dead_router)
    primary = service.server_node()
    for before in untold:
        if primary is not None and primary != before:
            replication.tell_failover(
                service, primary, before, max((lag for lag in lags if lag is not None), default=None)
            )
    took = (timezone.now() - began).total_seconds()
    names = ", ".join(node.name for node in dead) or "nothing dead"
    return f"healed in {took:.1f} s: replaced {names}; {said}"


def set_synchronous(service: Service) -> None:
    """A postgresql service's commits wait for a standby, or no longer: Patroni's setting, given
    to its members in place (the agent changes it without a restart)."""
    if service.runtime != Runtime.POSTGRESQL:
        return
    for node in replication.server_nodes(service):
        if node.data_port:
            start_server(service, node)
