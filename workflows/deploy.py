"""Deploy a code version into an environment, and retire the instances nothing uses any more.

Stage on every backend node, add the instances to the routers, wait until every router's health
checks pass, then flip the environment's route (one map commit per proxy). The old version keeps
serving until the flip; a version that fails its health check never receives a request.
"""

import time
from typing import NoReturn

from django.conf import settings
from django.db import transaction

from routing.health import Unhealthy, wait_healthy
from routing.table import RouterRefused, RoutesNotRestored, flip_or_restore, push
from services import agent, operations
from services.choices import NodeState, OperationKind, Outcome, ServiceState
from services.errors import Conflict, NotFound, OperationFailed
from services.models import Event, Operation
from versions.builds import ensure_build
from versions.instances import (
    LinkNotReady,
    Release,
    checked_settings,
    ensure_instances,
    instance_spec,
    link_environment,
)
from versions.logs import keep_failed_logs
from versions.models import CodeVersion, Environment, Instance, InstanceState, changed_settings, setting_values
from versions.storage import lock_version
from workflows.preview_databases import drop_copies, ensure_copies


def request_deploy(
    environment: Environment,
    version: CodeVersion,
    user,
    settings: dict | None = None,
    database_copy: bool | None = None,
) -> Operation:
    """Deploy `version` into `environment`, with new settings (as versions.models.clean_settings
    takes them) or its own copy of the linked databases turned on or off when given."""
    if settings is not None:
        settings = checked_settings(environment.service, settings)
    refuse_production_copy(environment, database_copy)
    params = {"environment": environment.name, "version": version.pk}
    changes = []
    if settings is not None and settings != environment.settings:
        params["settings"] = settings
        changes.append("new settings")
    if database_copy is not None and database_copy != environment.database_copy:
        params["database_copy"] = database_copy
        changes.append("its own database copy" if database_copy else "no database copy")
    with transaction.atomic():
        # The version's row, locked as delete_version locks it: either this deploy is recorded
        # first (and the delete refused), or the version is already gone.
        if not lock_version(version):
            raise NotFound(f"{environment.service.name} has no version {version.label} any more")
        return operations.start(
            environment.service,
            OperationKind.DEPLOY,
            user,
            params,
            message=f"deploy {version.label} to {environment.name}"
            + (f" with {' and '.join(changes)}" if changes else "")
            + " requested",
        )


def refuse_production_copy(environment: Environment, database_copy: bool | None) -> None:
    if database_copy and environment.is_production:
        raise Conflict("production uses the linked databases themselves; a copy is for other environments")


def run_deploy(operation) -> str:
    service = operation.service
    environment = Environment.objects.filter(service=service, name=operation.params["environment"]).first()
    version = CodeVersion.objects.filter(service=service, pk=operation.params["version"]).first()
    if environment is None or version is None:
        raise OperationFailed("the environment or the version was deleted before the deploy could start")
    settings_ = operation.params.get("settings", environment.settings)
    with_copy = operation.params.get("database_copy", environment.database_copy)
    release = None
    try:
        wait_for_links(service, operation)
        copies = ensure_copies(environment, operation) if with_copy else {}
        release = Release(version, environment, setting_values(settings_), copies)
        if version.build_id is None and version.needs_build is not False:
            operation.set_progress(f"looking for what {version.label} needs built")
        ensure_build(service, version, operation)
        run_release(service, release, operation)
        operation.set_progress(f"starting {version.label} on the backend nodes")
        ensure_instances(service, release, operation)
        operation.set_progress("adding the instances to the router")
        push(service)
        operation.set_progress(f"waiting for {version.label} to pass its health check")
        wait_healthy(service, release)
    except OperationFailed as exc:
        fail(service, release, operation, exc)
    previous = Environment.objects.get(pk=environment.pk)
    operation.set_progress(f"routing {environment.name} to {version.label}")
    fields = {"version": version, "settings": settings_, "settings_key": release.key, "database_copy": with_copy}
    try:
        flip_or_restore(service, {previous: fields}, release)
    except RoutesNotRestored as exc:
        Event.record(
            service,
            "route",
            f"could not restore the routes after a failed deploy: {exc}",
            Outcome.FAILED,
            operation=operation,
        )
        retire_unused(service, operation)
        raise
    except RouterRefused as exc:
        # The router's sentence names the instance; the user also needs what was refused.
        fail(service, release, operation, RouterRefused(f"{version.label} in {environment.name} is not healthy {exc}"))
    except OperationFailed as exc:
        fail(service, release, operation, exc)
    was = f" (was {previous.version.label})" if previous.version and previous.version != version else ""
    if settings_changed := changed_settings(previous.settings, settings_):
        was += "; settings changed: " + ", ".join(settings_changed)
    Event.record(
        service, "route", f"{environment.name} now serves {version.label}{was}", Outcome.SUCCEEDED, operation=operation
    )
    operation.set_progress("retiring instances nothing uses")
    retire_unused(service, operation)
    if not with_copy and previous.database_copy:
        drop_copies(environment, operation)
    return f"deployed {version.label} to {environment.name}"


def fail(service, release: Release | None, operation, exc: OperationFailed) -> NoReturn:
    """End a failed deploy: keep the logs of the release's instances, retire them, and fail with
    the last lines of those logs when its health check failed (they say why; a start that
    failed says it already)."""
    excerpt = keep_failed_logs(service, release, operation) if release else ""
    retire_unused(service, operation)
    if isinstance(exc, Unhealthy) and excerpt:
        environment = release.environment.name
        raise OperationFailed(
            f"{exc}\nthe last lines of its logs (all of them: conpaas logs {service.name} {environment} --failed):"
            f"\n{excerpt}"
        ) from exc
    raise exc


def run_release(service, release: Release, operation) -> None:
    """The version's release command, once, on one backend node, with the environment's variables
    (links and settings included), before any instance of it serves there; its output goes to the
    events."""
    version, environment = release.version, release.environment
    if not version.release_command:
        return
    node = service.backend_node_list().filter(state=NodeState.RUNNING).first()
    if node is None:
        raise OperationFailed(f"no running backend node to run the release command of {version.label} on")
    operation.set_progress(f"running the release command of {version.label}")
    spec = {**instance_spec(service, release), "command": version.release_command}
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
    """Stop the instances of releases no environment serves, after the routers have drained them."""
    serving = list(Environment.objects.filter(service=service).exclude(version=None))
    in_use = {env.backend for env in serving}
    stale = [
        instance
        for instance in Instance.objects.filter(node__service=service).select_related("node", "version")
        if instance.backend not in in_use
    ]
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
    served_versions = {env.version_id for env in serving}
    unused = ", ".join(sorted({i.version.label for i in stale if i.version_id not in served_versions}))
    rerun = ", ".join(sorted({i.version.label for i in stale if i.version_id in served_versions}))
    if unused:
        Event.record(
            service, "retire", f"retired {unused}: no environment serves it", Outcome.SUCCEEDED, operation=operation
        )
    if rerun:  # still served, with other settings or database copies now
        message = f"retired the instances of {rerun} that ran with earlier settings"
        Event.record(service, "retire", message, Outcome.SUCCEEDED, operation=operation)
