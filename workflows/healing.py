"""Self-healing: dead nodes replaced, stopped instances and routers started again.

Every CONPAAS_HEAL_INTERVAL seconds `manage.py up` queues a check (workflows.tasks): the agent of
every running node of every running service is asked how it is, each service claimed with a
conditional UPDATE first, so passes that overlap never check it twice. What a check finds is
healed by a `heal` operation of that service, held like any operation (services/operations.py):
healing never races a deploy, a swap or a scale, it waits for them, and a service being changed
by one is looked at again next time.

- A node is dead when its agent does not answer and its cloud says it stopped or is gone (the
  local cloud knows the moment the agent exits), or when its agent has not answered for
  CONPAAS_HEAL_GRACE seconds. The routers' health checks have taken its instances out of
  rotation within seconds already (requests that cannot change anything were retried on another
  server: images/conpaas_agent/router/config.py); healing marks it failed, drops it from the
  routing, destroys it and boots its replacement, a router at its address and port so that the
  service keeps its URL (workflows/reconcile.py).
- A database's dead node (postgresql, redis, mysql: once it has a backup) is rebuilt where it was, its
  server restored from the newest backup and all the WAL archived since, on the same port with
  the same password (workflows/backups.py rebuild); the event says the recovery point.
- An instance whose process died is started again, and a router whose HAProxy died.
- Nodes missing (a replacement whose boot failed) are booted, and a node left booting by an
  operation whose worker died is replaced; after a heal that failed the next one waits
  RETRY_FAILED seconds, so a failing cloud is not asked in a loop.
Every step is an event; the heal operation's last one says how long healing took since the
check noticed it.
"""

from datetime import timedelta

from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from routing.health import wait_healthy
from routing.table import push
from services import operations, replication
from services.choices import (
    DATABASE_RUNTIMES,
    BackupState,
    NodeState,
    OperationKind,
    OperationState,
    Outcome,
    Runtime,
    ServiceState,
)
from services.data_servers import SERVER
from services.errors import OperationFailed
from services.models import GONE, Backup, Event, Node, Operation, Service, active_operations
from services.nodes import CloudView, check_agent, destroy_node
from services.replication import ROUTER
from versions.models import Instance, InstanceState
from workflows import backups
from workflows import replication as replicated
from workflows.data_services import ensure_server
from workflows.reconcile import boot_missing_nodes, converge_instances
from workflows.storage import ensure_store

RETRY_FAILED = 60  # seconds after a failed heal before the next one


def check_due(max_age: float) -> int:
    """Check every running service whose nodes were last checked `max_age` seconds ago or more;
    returns how many heal operations were started."""
    now = timezone.now()
    stale = Q(nodes_checked__isnull=True) | Q(nodes_checked__lte=now - timedelta(seconds=max_age))
    # A storage service's nodes but the first are volume servers whose objects have copies elsewhere.
    # A database only once it has a backup: a new node for a dead server is restored from it (a
    # database without one would come up empty, so its node is left as it died: README, Backups).
    # A replicated one (its router in front) always: its replicas hold the data, its router is
    # replaced where it was.
    backed_up = Backup.objects.filter(service=OuterRef("pk"), state=BackupState.COMPLETED)
    routed = Node.objects.filter(service=OuterRef("pk"), is_proxy=True).exclude(state__in=GONE)
    running = Service.objects.filter(state=ServiceState.RUNNING, locked_by__isnull=True).exclude(
        Q(runtime__in=DATABASE_RUNTIMES) & ~Exists(backed_up) & ~Exists(routed)
    )
    started = 0
    # One query when nothing is due: the usual case on an idle platform.
    for service_id in running.filter(stale).values_list("pk", flat=True):
        if not running.filter(stale, pk=service_id).update(nodes_checked=now):
            continue  # another pass took it, or an operation holds it now
        service = Service.objects.filter(pk=service_id).first()
        if service is not None and check(service) is not None:
            started += 1
    return started


def check(service: Service) -> Operation | None:
    """Look at the service's nodes; start a heal operation when something needs one."""
    findings, _ = diagnose(service)
    if not findings or active_operations().filter(service=service, kind=OperationKind.HEAL).exists():
        return None
    if Service.objects.filter(pk=service.pk, locked_by__isnull=False).exists():
        return None  # an operation took it meanwhile: what was seen may be its work in progress
    last = Operation.objects.filter(service=service, kind=OperationKind.HEAL).first()
    if (
        last
        and last.state == OperationState.FAILED
        and last.finished > timezone.now() - timedelta(seconds=RETRY_FAILED)
    ):
        return None
    return operations.start(service, OperationKind.HEAL, None, message="healing: " + "; ".join(findings))


def diagnose(service: Service) -> tuple[list[str], dict[Node, str]]:
    """What needs healing, in words, and the dead nodes with why."""
    view, findings, dead = CloudView(), [], {}
    # Nothing boots a node of a service no operation holds (a check) or that this heal holds.
    for node in service.live_nodes().filter(state=NodeState.BOOTING):
        dead[node] = "it was left booting by an operation that ended"
        findings.append(f"node {node.name} is dead: {dead[node]}")
    for node in service.live_nodes().filter(state=NodeState.RUNNING):
        why, status = check_agent(node, view)
        if why:
            dead[node] = why
            findings.append(f"node {node.name} is dead: {why}")
        elif status is not None:
            findings += stopped(node, status)
    if service.is_routed and not service.backups.filter(state=BackupState.COMPLETED).exists():
        # Its last server dead, and no backup: a new one would come up empty. It is left as it
        # died (README, Backups); its router, which holds no data, is still replaced.
        servers = set(replication.server_nodes(service))
        if servers and servers <= set(dead):
            for node in servers:
                findings.remove(f"node {node.name} is dead: {dead.pop(node)}")
    failed = service.live_nodes().filter(state=NodeState.FAILED).count()
    if failed:
        findings.append(f"{failed} failed node(s) to replace")
    elif service.is_routed:
        if service.router_node() is None:
            findings.append("the router runs on no node")
        if (servers := len(replication.server_nodes(service))) < service.backend_nodes:
            findings.append(f"{servers} of {service.backend_nodes} server node(s)")
    elif service.runtime in DATABASE_RUNTIMES:
        if service.server_node() is None:
            findings.append(f"the {service.runtime} server runs on no node")
    elif service.runtime == Runtime.STORAGE:
        if (nodes := service.backend_node_list().count()) < service.backend_nodes:
            findings.append(f"{nodes} of {service.backend_nodes} storage node(s)")
    elif not service.proxy_nodes().exists():
        findings.append("no router node")
    elif (backends := service.backend_node_list().count()) < service.backend_nodes:
        findings.append(f"{backends} of {service.backend_nodes} backend node(s)")
    return findings, dead


def stopped(node: Node, status: dict) -> list[str]:
    """What the agent of a live node reports stopped: instances it should run, its router."""
    reported = status.get("instances") or {}
    found = [
        f"instance {instance.name} is not running"
        for instance in Instance.objects.filter(node=node, state=InstanceState.RUNNING).select_related("node")
        if (reported.get(instance.name) or {}).get("state") != "running"
    ]
    if node.service.runtime in DATABASE_RUNTIMES and node.data_port:
        # A replicated service's nodes run a sentinel too: whatever they run must run.
        expected = {ROUTER if node.is_proxy else SERVER, *reported}
        found += [
            f"the {name} of {node.service.name} on {node.name} is not running"
            for name in sorted(expected)
            if (reported.get(name) or {}).get("state") != "running"
        ]
    if node.service.runtime == Runtime.STORAGE:
        found += [
            f"the storage server {name} on {node.name} is not running"
            for name, instance in reported.items()
            if instance.get("version") == Runtime.STORAGE and instance.get("state") != "running"
        ]
    if node.is_proxy and status.get("proxy") is not None and not status["proxy"].get("running"):
        found.append(f"the router on {node.name} is not running")
    return found


def heal(operation) -> str:
    """The heal operation: what `diagnose` finds now (things may have changed since the check), healed."""
    service = operation.service
    findings, dead = diagnose(service)
    if not findings:
        return "nothing to heal: every node answered and runs what it should"
    first = service.server_node() if service.runtime == Runtime.STORAGE else None
    for node, why in dead.items():
        Node.objects.filter(pk=node.pk).update(state=NodeState.FAILED, error=why)
        Event.record(service, "heal", f"node {node.name} is dead: {why}", Outcome.FAILED, operation=operation)
    if service.runtime == Runtime.STORAGE:
        return heal_store(service, operation, first, list(dead))
    if service.is_routed and replication.server_nodes(service):
        return replicated.heal(service, list(dead), operation)
    if service.runtime in DATABASE_RUNTIMES:
        return heal_database(service, operation)
    if dead:
        operation.set_progress("taking the dead nodes out of the routers")
        push(service)
    failed = list(service.live_nodes().filter(state=NodeState.FAILED).values_list("name", flat=True))
    operation.set_progress("replacing what is missing")
    booted = boot_missing_nodes(service, operation)
    releases, started = converge_instances(service, operation)
    unhealthy = []
    if booted or started:
        operation.set_progress("waiting for the health checks")
        for release in releases:
            try:
                wait_healthy(service, release)
            except OperationFailed as exc:  # the app's own failure: healing did what it could
                unhealthy.append(str(exc))
    took = (timezone.now() - operation.created).total_seconds()
    done = []
    if failed:
        done.append(f"replaced {', '.join(failed)} by {', '.join(booted)}")
    elif booted:
        done.append(f"booted {', '.join(booted)}")
    if started:
        done.append(f"started {started} instance(s)")
    summary = f"healed in {took:.1f} s since it was noticed: " + ("; ".join(done) or "routers told")
    if unhealthy:
        summary += "; still unhealthy: " + "; ".join(unhealthy)
    return summary


def heal_store(service: Service, operation, first: Node | None, dead: list[Node]) -> str:
    """A storage service: dead volume nodes replaced by new ones (ensure_store boots them and has
    the objects that lost a copy copied again); a stopped server started again. Its first node is
    not replaced: it holds the filer, the objects' names, and a new one would be an empty store."""
    if first is not None and first in dead:
        raise OperationFailed(
            f"the store's first node {first.name} is dead: it holds the filer (the objects' names) and is not "
            "replaced by an empty one; restore it or recreate the service"
        )
    for node in dead:
        destroy_node(node, operation)
    ensure_store(service, operation)
    took = (timezone.now() - operation.created).total_seconds()
    replaced = f"replaced {', '.join(node.name for node in dead)}" if dead else "servers started"
    return f"healed in {took:.1f} s since it was noticed: {replaced}; the store keeps 2 copies again"


def heal_database(service: Service, operation) -> str:
    """A database: its dead server's node rebuilt from the backups (workflows/backups.py rebuild),
    or its stopped server started again with its data. A scratch node a verification left (its
    worker died) goes."""
    for scratch in service.live_nodes().filter(state=NodeState.FAILED, scratch=True):
        destroy_node(scratch, operation)
    dead = (
        service.live_nodes()
        .filter(state=NodeState.FAILED, scratch=False, is_backend=True)
        .order_by("-data_port")
        .first()
    )
    if dead is not None:
        return backups.rebuild(service, dead, operation)
    node = ensure_server(service, operation)
    return f"healed: the {service.runtime} server runs again on {node.name}"
