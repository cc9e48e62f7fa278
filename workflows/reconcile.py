"""Converging a service's nodes to the database after the control plane was away.

The data plane kept serving meanwhile; this boots the nodes the service should have and has not
(after 'manage.py down', or a failed boot), asks every backend node to run the versions the
environments serve (an agent starts again what stopped), and sends every router the routing
table again. Safe to run any number of times. Self-healing (workflows/healing.py) converges the
same way once it has marked a dead node failed."""

from routing.health import wait_healthy
from routing.table import push
from services import operations
from services.choices import NodeState, OperationKind, ServiceState
from services.clouds import RouterPlace
from services.models import Event, Service
from services.nodes import boot_node, destroy_node, remove_from_cloud
from versions.instances import Release, ensure_instances, serving_releases
from workflows.data_services import ensure_server


def reconcile(operation) -> str:
    service = operation.service
    if service.is_data:
        # Its server's node, and no router: a router booted for it would take its URL's place.
        node = ensure_server(service, operation)
        Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING)
        return f"reconciled: the {service.runtime} server runs on {node.name}"
    booted = boot_missing_nodes(service, operation)
    releases, _ = converge_instances(service, operation)
    if booted:
        for release in releases:
            wait_healthy(service, release)
    Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING)
    return "reconciled: " + (f"booted {', '.join(booted)}; " if booted else "") + "routers in step with the database"


def converge_instances(service, operation) -> tuple[list[Release], int]:
    """Every release in use on every running backend node, and the routers told: returns the
    environments' releases, and how many instances were started or started again."""
    releases = serving_releases(service)
    # Idempotent on every node: starts what is missing or stopped, leaves the rest alone.
    started = sum(ensure_instances(service, release, operation) for release in releases)
    push(service)
    return releases, started


def boot_missing_nodes(service, operation) -> list[str]:
    """Nodes the service should have and has not (destroyed by 'manage.py down', or failed).

    A failed router that had an address is replaced at that address and port, so the service
    keeps its URL: its machine goes first (the address is released), its row stays failed, and
    so remembers the address for the next try, until the replacement runs."""
    failed = list(service.live_nodes().filter(state=NodeState.FAILED))
    dead_router = next((node for node in failed if node.is_proxy and node.address and node.http_port), None)
    for node in failed:
        if node != dead_router:
            destroy_node(node, operation)
    booted = []
    if not service.proxy_nodes().exclude(pk=getattr(dead_router, "pk", None)).exists():
        router_at = None
        if dead_router is not None:
            remove_from_cloud(dead_router)
            router_at = RouterPlace(dead_router.address, dead_router.http_port, dead_router.public_port)
            Event.record(
                service,
                "node.boot",
                f"replacing router node {dead_router.name} where it was ({dead_router.http_url}), "
                "so that the service keeps its URL",
                operation=operation,
            )
        booted.append(boot_node(service, ["proxy", "backend"], operation, router_at).name)
    if dead_router is not None:
        destroy_node(dead_router, operation)
    while service.backend_node_list().count() < service.backend_nodes:
        booted.append(boot_node(service, ["backend"], operation).name)
    return booted


def reconcile_all() -> int:
    """Queue a reconcile of every running service (at control-plane start)."""
    services = Service.objects.filter(state__in=[ServiceState.RUNNING, ServiceState.FAILED])
    for service in services:
        operations.start(service, OperationKind.RECONCILE, None, message="reconcile after a control-plane start")
    return len(services)
