"""Environments: adding one, changing its preview key, and asking for a deploy into it.

The API and the console both call these; neither has a second implementation."""

from django.db import transaction

from routing.table import push
from services import operations
from services.choices import OperationKind
from services.models import Event, Operation, Service
from versions.models import CodeVersion, Environment, new_preview_key


def add_environment(service: Service, name: str, user, preview_key: str = "") -> Environment:
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": name}) as operation:
        environment = Environment.objects.create(
            service=service, name=name, preview_key=preview_key or new_preview_key()
        )
        push(service)
        Event.record(service, "environment", f"added environment {name}", actor=user, operation=operation)
    return environment


def change_preview_key(environment: Environment, preview_key: str, user) -> None:
    service = environment.service
    with operations.holding(service, OperationKind.ROUTE, user, {"environment": environment.name}) as operation:
        Environment.objects.filter(pk=environment.pk).update(preview_key=preview_key)
        push(service)
        Event.record(
            service, "environment", f"changed the preview key of {environment.name}", actor=user, operation=operation
        )
    environment.preview_key = preview_key


def request_deploy(environment: Environment, version: CodeVersion, user) -> Operation:
    with transaction.atomic():
        return operations.start(
            environment.service,
            OperationKind.DEPLOY,
            user,
            {"environment": environment.name, "version": version.pk},
            message=f"deploy {version.label} to {environment.name} requested",
        )
