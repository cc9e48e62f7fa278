"""Environments: adding one and changing its preview key (deploying into one: workflows.deploy).

The API and the console both call these; neither has a second implementation."""

from routing.table import push
from services import operations, quotas
from services.choices import OperationKind
from services.models import Event, Service
from versions.models import Environment, new_preview_key


def add_environment(service: Service, name: str, user, preview_key: str = "") -> Environment:
    environment = Environment(service=service, name=name, preview_key=preview_key or new_preview_key())
    environment.validate()
    quotas.check_new_environment(service)
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": name}) as operation:
        environment.validate()  # again, held: another request may have taken the name meanwhile
        quotas.check_new_environment(service)
        environment.save()
        push(service)
        Event.record(service, "environment", f"added environment {name}", actor=user, operation=operation)
    return environment


def change_preview_key(environment: Environment, preview_key: str, user) -> None:
    service = environment.service
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
