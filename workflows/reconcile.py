"""Converging a service's nodes to the database after the control plane was away.

The data plane kept serving meanwhile; this boots the nodes the service should have and has not
(after 'manage.py down', or a failed boot), asks every backend node to run the versions the
environments serve (an agent starts again what stopped), and sends every router the routing
table again. Safe to
run any number of times."""

from routing.health import wait_healthy
from routing.table import push
from services import operations
from services.choices import NodeState, OperationKind, ServiceState
from services.models import Service
from services.nodes import boot_node, destroy_node
from versions.instances import ensure_instances
from versions.models import Environment


def reconcile(operation) -> str:
    service = operation.service
    booted = boot_missing_nodes(service, operation)
    environments = list(Environment.objects.filter(service=service).exclude(version=None).select_related("version"))
    for environment in environments:
        # Idempotent on every node: starts what is missing or stopped, leaves the rest alone.
        ensure_instances(service, environment.version, environment, operation)
    push(service)
    if booted:
        for environment in environments:
            wait_healthy(service, environment.version)
    Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING)
    return "reconciled: " + (f"booted {', '.join(booted)}; " if booted else "") + "routers in step with the database"


def boot_missing_nodes(service, operation) -> list[str]:
    """Nodes the service should have and has not (destroyed by 'manage.py down', or failed)."""
    for node in service.live_nodes().filter(state=NodeState.FAILED):
        destroy_node(node, operation)
    booted = []
    if not service.proxy_nodes().exists():
        booted.append(boot_node(service, ["proxy", "backend"], operation).name)
    while service.backend_node_list().count() < service.backend_nodes:
        booted.append(boot_node(service, ["backend"], operation).name)
    return booted


def reconcile_all() -> int:
    """Queue a reconcile of every running service (at control-plane start)."""
    services = Service.objects.filter(state__in=[ServiceState.RUNNING, ServiceState.FAILED])
    for service in services:
        operations.start(service, OperationKind.RECONCILE, None, message="reconcile after a control-plane start")
    return len(services)
