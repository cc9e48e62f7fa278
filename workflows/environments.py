"""Environments: adding one, changing its preview key or its settings, deleting one (deploying
into one: workflows.deploy).

The API and the console both call these; neither has a second implementation."""

from routing.table import push
from services import operations, quotas
from services.choices import OperationKind
from services.errors import Conflict
from services.models import Event, Operation, Service
from versions.instances import checked_settings
from versions.models import PRODUCTION, Environment, new_preview_key
from workflows.deploy import refuse_production_copy, request_deploy, retire_unused
from workflows.preview_databases import drop_copies


def add_environment(
    service: Service, name: str, user, preview_key: str = "", settings: dict | None = None, database_copy: bool = False
) -> Environment:
    """`settings` as versions.models.clean_settings takes them; `database_copy`: the environment gets
    its own copy of the linked databases at its first deploy (workflows.preview_databases)."""
    refuse_data_service(service)
    environment = Environment(
        service=service,
        name=name,
        preview_key=preview_key or new_preview_key(),
        settings=checked_settings(service, settings or {}),
        database_copy=database_copy,
    )
    environment.validate()
    quotas.check_new_environment(service)
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": name}) as operation:
        environment.validate()  # again, held: another request may have taken the name meanwhile
        quotas.check_new_environment(service)
        environment.save()
        push(service)
        Event.record(service, "environment", f"added environment {name}", actor=user, operation=operation)
    return environment


def refuse_data_service(service: Service) -> None:
    """A data service runs no code: environments, settings and preview keys would change nothing."""
    if service.is_data:
        raise Conflict(f"a {service.runtime} service has no environments: it runs no code versions")


def change_preview_key(environment: Environment, preview_key: str, user) -> None:
    service = environment.service
    refuse_data_service(service)
    candidate = Environment(pk=environment.pk, service=service, name=environment.name, preview_key=preview_key)
    candidate.validate()
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": environment.name}) as operation:
        candidate.validate()  # again, held: another request may have taken the key meanwhile
        Environment.objects.filter(pk=environment.pk).update(preview_key=preview_key)
        push(service)
        Event.record(
            service, "environment", f"changed the preview key of {environment.name}", actor=user, operation=operation
        )
    environment.preview_key = preview_key


def change_environment(
    environment: Environment, user, version=None, settings: dict | None = None, database_copy: bool | None = None
) -> Operation | None:
    """Deploy a version, new settings or a database copy into the environment: a deploy operation
    when it serves (or is given) a version, so the change reaches instances health-gated; without
    one, the change is saved for its first deploy (None)."""
    refuse_data_service(environment.service)
    if version is not None or environment.version_id is not None:
        return request_deploy(environment, version or environment.version, user, settings, database_copy)
    refuse_production_copy(environment, database_copy)
    changes = {}
    if settings is not None:
        changes["settings"] = checked_settings(environment.service, settings)
    if database_copy is not None:
        changes["database_copy"] = database_copy
    if not changes:
        return None
    service = environment.service
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": environment.name}) as operation:
        Environment.objects.filter(pk=environment.pk).update(**changes)
        Event.record(
            service,
            "environment",
            f"changed {' and '.join(k.replace('_', ' ') for k in changes)} of {environment.name}"
            " (used at its first deploy)",
            actor=user,
            operation=operation,
        )
    for field, value in changes.items():
        setattr(environment, field, value)
    return None


def delete_environment(environment: Environment, user) -> None:
    """Take the environment out of the routers, stop what only it ran, drop its database copies."""
    if environment.name == PRODUCTION:
        raise Conflict("production cannot be deleted (delete the service instead)")
    service = environment.service
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": environment.name}) as operation:
        Environment.objects.filter(pk=environment.pk).update(version=None)
        push(service)
        retire_unused(service, operation)
        drop_copies(environment, operation)
        environment.delete()
        push(service)  # its preview key too
        Event.record(service, "environment", f"deleted environment {environment.name}", actor=user, operation=operation)
