"""Converging a service's nodes to the database after the control plane was away.

The data plane kept serving meanwhile; this boots the nodes the service should have and has not
(after 'manage.py down', or a failed boot), re-reads what each agent runs, starts again the
instances that should run and do not, and sends every router the routing table again. Safe to
run any number of times."""

from routing.table import push, wait_healthy
from services import operations
from services.agent import AgentClient, AgentError
from services.choices import NodeState, OperationKind, Outcome, ServiceState
from services.models import Event, Service
from services.nodes import boot_node, destroy_node
from versions.deploy import archive_url, ensure_instances
from versions.models import Environment, Instance, InstanceState


def reconcile(operation) -> str:
    service = operation.service
    booted = boot_missing_nodes(service, operation)
    restarted, unreachable = [], []
    for node in service.live_nodes().filter(state=NodeState.RUNNING):
        client = AgentClient(node)
        try:
            running = client.status(timeout=10)["instances"] if node.is_backend else {}
        except AgentError as exc:
            unreachable.append(node.name)
            Event.record(
                service, "reconcile", f"node {node.name} did not answer: {exc}", Outcome.FAILED, operation=operation
            )
            continue
        for instance in Instance.objects.filter(node=node, state=InstanceState.RUNNING).select_related("version"):
            actual = running.get(instance.name)
            if actual and actual.get("state") == "running" and actual.get("port") == instance.port:
                continue
            try:
                started = client.put_instance(
                    instance.name, {**instance.spec, "archive_url": archive_url(instance.version)}
                )
            except AgentError as exc:
                Instance.objects.filter(pk=instance.pk).update(state=InstanceState.FAILED, error=str(exc))
                Event.record(
                    service,
                    "instance.start",
                    f"could not restart {instance.name}: {exc}",
                    Outcome.FAILED,
                    operation=operation,
                )
                continue
            Instance.objects.filter(pk=instance.pk).update(port=started["port"])
            restarted.append(instance.name)
            Event.record(
                service,
                "instance.start",
                f"restarted {instance.name}: it was not running",
                Outcome.SUCCEEDED,
                operation=operation,
            )
    environments = list(Environment.objects.filter(service=service).exclude(version=None).select_related("version"))
    for environment in environments:  # the new nodes' instances; a no-op where they run
        ensure_instances(service, environment.version, environment, operation)
    push(service)
    if booted:
        for environment in environments:
            wait_healthy(service, environment.version)
    parts = ["routers in step with the database"]
    if booted:
        parts.append(f"booted {', '.join(booted)}")
    if restarted:
        parts.append(f"restarted {', '.join(restarted)}")
    if unreachable:
        parts.append(f"unreachable: {', '.join(unreachable)}")
    Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING)
    return "reconciled: " + "; ".join(parts)


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
