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
from services.choices import OperationKind, Outcome, ServiceState
from services.errors import NotFound, OperationFailed
from services.models import Event, Operation
from versions.instances import LinkNotReady, ensure_instances, link_environment
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
