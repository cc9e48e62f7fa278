"""Deploy a code version into an environment, and retire the instances nothing uses any more.

Stage on every backend node, add the instances to the routers, wait until every router's health
checks pass, then flip the environment's route (one map commit per proxy). The old version keeps
serving until the flip; a version that fails its health check never receives a request.
"""

import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from routing.health import wait_healthy
from routing.table import push
from services import agent, operations
from services.choices import NodeState, OperationKind, Outcome, ServiceState
from services.errors import NotFound, OperationFailed
from services.models import Event, Operation
from versions.instances import LinkNotReady, ensure_instances, instance_spec, link_environment
from versions.models import CodeVersion, Environment, Instance, InstanceState
from versions.storage import lock_version


def request_deploy(environment: Environment, version: CodeVersion, user) -> Operation:
    with transaction.atomic():
        # The version's row, locked as delete_version locks it: either this deploy is recorded
        # first (and the delete refused), or the version is already gone.
        if not lock_version(version):
            raise NotFound(f"{environment.service.name} has no version {version.label} any more")
        return operations.start(
            environment.service,
            OperationKind.DEPLOY,
            user,
            {"environment": environment.name, "version": version.pk},
            message=f"deploy {version.label} to {environment.name} requested",
        )


def run_deploy(operation) -> str:
    service = operation.service
    environment = Environment.objects.filter(service=service, name=operation.params["environment"]).first()
    version = CodeVersion.objects.filter(service=service, pk=operation.params["version"]).first()
    if environment is None or version is None:
        raise OperationFailed("the environment or the version was deleted before the deploy could start")
    try:
        wait_for_links(service, operation)
        run_release(service, version, environment, operation)
        operation.set_progress(f"starting {version.label} on the backend nodes")
        ensure_instances(service, version, environment, operation)
        operation.set_progress("adding the instances to the router")
        push(service)
        operation.set_progress(f"waiting for {version.label} to pass its health check")
        wait_healthy(service, version)
    except OperationFailed:
        retire_unused(service, operation)
        raise
    previous = environment.version
    operation.set_progress(f"routing {environment.name} to {version.label}")
    Environment.objects.filter(pk=environment.pk).update(version=version, updated=timezone.now())
    try:
        # Each router flips only if the version is still healthy there, in the same step.
        push(service, require_healthy=version)
    except OperationFailed:
        Environment.objects.filter(pk=environment.pk).update(version=previous)
        try:
            push(service)
        finally:
            retire_unused(service, operation)
        raise
    was = f" (was {previous.label})" if previous and previous != version else ""
    Event.record(
        service, "route", f"{environment.name} now serves {version.label}{was}", Outcome.SUCCEEDED, operation=operation
    )
    operation.set_progress("retiring instances nothing uses")
    retire_unused(service, operation)
    return f"deployed {version.label} to {environment.name}"


def run_release(service, version: CodeVersion, environment: Environment, operation) -> None:
    """The version's release command, once, on one backend node, with the environment's variables
    (links included), before any instance of it serves there; its output goes to the events."""
    if not version.release_command:
        return
    node = service.backend_node_list().filter(state=NodeState.RUNNING).first()
    if node is None:
        raise OperationFailed(f"no running backend node to run the release command of {version.label} on")
    operation.set_progress(f"running the release command of {version.label}")
    spec = {**instance_spec(service, version, environment), "command": version.release_command}
    try:
        result = agent.client_for(node).run_release(spec)
    except agent.AgentError as exc:
        reason = exc.detail if exc.status else str(exc)
        raise OperationFailed(f"the release command of {version.label} could not run on {node.name}: {reason}") from exc
    code, output = result["exit_code"], result.get("output", "").strip()
    serving = environment.version.label if environment.version else "nothing"
    if code != 0:
        Event.record(
            service,
            "release",
            f"release command of {version.label} failed (exit {code}); {environment.name} still serves "
            f"{serving}; its output:\n{output}",
            Outcome.FAILED,
            operation=operation,
        )
        raise OperationFailed(
            f"the release command of {version.label} failed (exit {code}); nothing was switched "
            f"({environment.name} still serves {serving})"
        )
    Event.record(
        service,
        "release",
        f"release command of {version.label} succeeded in {result.get('seconds', 0)} s; its output:\n{output}",
        Outcome.SUCCEEDED,
        operation=operation,
    )


def wait_for_links(service, operation) -> None:
    """Wait while a linked service is still being created (an application applied at once
    creates its services side by side); any other linked service without an address fails."""
    deadline = time.monotonic() + settings.CONPAAS_BOOT_TIMEOUT
    while True:
        try:
            link_environment(service)
            return
        except LinkNotReady as exc:
            creating = service.links.filter(target__state=ServiceState.CREATING).exists()
            if not creating or time.monotonic() > deadline:
                raise
            operation.set_progress(f"waiting: {exc}")
            time.sleep(1)


def retire_unused(service, operation=None) -> None:
    """Stop the instances of versions no environment serves, after the routers have drained them."""
    in_use = set(service.environments.exclude(version=None).values_list("version_id", flat=True))
    stale = list(
        Instance.objects.filter(node__service=service).exclude(version_id__in=in_use).select_related("node", "version")
    )
    if not stale:
        return
    Instance.objects.filter(pk__in=[i.pk for i in stale]).update(state=InstanceState.STOPPING)
    push(service)  # the routers drain the servers before removing them
    for instance in stale:
        try:
            agent.client_for(instance.node).delete_instance(instance.name)
        except agent.AgentError as exc:
            if not exc.unreachable and exc.status != 404:
                raise OperationFailed(f"could not stop {instance.name}: {exc}") from exc
        instance.delete()
    labels = ", ".join(sorted({i.version.label for i in stale}))
    Event.record(
        service, "retire", f"retired {labels}: no environment serves it", Outcome.SUCCEEDED, operation=operation
    )
