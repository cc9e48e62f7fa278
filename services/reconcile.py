"""Converging a service's nodes to the database after the control plane was away.

The data plane kept serving meanwhile; this re-reads what each agent runs, starts again the
instances that should run and do not (an instance that exited, a node that rebooted), and sends
every router the routing table again. Safe to run any number of times."""

from routing.table import push
from services.agent import AgentClient, AgentError
from services.choices import NodeState, Outcome
from services.models import Event
from versions.deploy import archive_url
from versions.models import Instance, InstanceState


def reconcile(operation) -> str:
    service = operation.service
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
    push(service)
    parts = ["routers in step with the database"]
    if restarted:
        parts.append(f"restarted {', '.join(restarted)}")
    if unreachable:
        parts.append(f"unreachable: {', '.join(unreachable)}")
    return "reconciled: " + "; ".join(parts)


def reconcile_all() -> int:
    """Queue a reconcile of every running service (at control-plane start)."""
    from services import operations
    from services.choices import OperationKind, ServiceState
    from services.models import Service

    services = Service.objects.filter(state=ServiceState.RUNNING)
    for service in services:
        operations.start(service, OperationKind.RECONCILE, None, message="reconcile after a control-plane start")
    return len(services)
