"""Swap: exchange the versions of production and another environment, health-gated and atomic."""

from django.db import transaction
from django.utils import timezone

from routing.table import RouterRefused, instance_problems, push
from services import operations
from services.choices import OperationKind, Outcome
from services.errors import Conflict, NotFound, OperationFailed
from services.models import Event
from versions.models import DEVELOPMENT, PRODUCTION, Environment


class SwapRefused(Conflict):
    """The swap would break production; nothing was changed."""


def swap(service, environment_name: str = DEVELOPMENT, actor=None) -> dict:
    if not Environment.objects.filter(service=service, name=environment_name).exists():
        raise NotFound(f"{service.name} has no environment named {environment_name}")
    with operations.holding(service, OperationKind.SWAP, actor, {"environment": environment_name}) as operation:
        production = Environment.objects.select_related("version").get(service=service, name=PRODUCTION)
        other = Environment.objects.select_related("version").get(service=service, name=environment_name)
        problems = instance_problems(service, other.version)[1] if other.version else []
        if refusal := swap_refusal(production, other, problems):
            refuse(service, refusal, actor, operation)

        incoming, outgoing = other.version, production.version
        with transaction.atomic():
            now = timezone.now()
            # Each saved health verdict is about a version's servers, which a swap does not touch:
            # it moves with its version, so the console stays right without asking the routers.
            Environment.objects.filter(pk=production.pk).update(version=incoming, updated=now, **other.health_fields())
            Environment.objects.filter(pk=other.pk).update(version=outgoing, updated=now, **production.health_fields())
        try:
            # Each router checks the incoming version's health and commits in one step.
            push(service, require_healthy=incoming)
        except OperationFailed as exc:
            # Put the database back as it was and make every proxy agree with it again.
            with transaction.atomic():
                Environment.objects.filter(pk=production.pk).update(version=outgoing, **production.health_fields())
                Environment.objects.filter(pk=other.pk).update(version=incoming, **other.health_fields())
            try:
                push(service)
            except OperationFailed as again:
                Event.record(
                    service,
                    "swap",
                    f"could not restore the routes after a failed swap: {again}",
                    Outcome.FAILED,
                    actor,
                    operation,
                )
            if isinstance(exc, RouterRefused):
                refuse(service, f"{incoming.label} in {other.name} is not healthy {exc}", actor, operation)
            raise
        Event.record(
            service,
            "swap",
            f"swapped: production now serves {incoming.label}, {other.name} serves {outgoing.label}",
            Outcome.SUCCEEDED,
            actor,
            operation,
        )
    return {PRODUCTION: incoming.pk, other.name: outgoing.pk}


def swap_refusal(production, other, problems: list[str]) -> str | None:
    """Why swapping `other` with `production` is refused (None: it is not); `problems` are the
    incoming version's health problems. The console shows it on the disabled swap button."""
    if other.is_production:
        return "choose an environment other than production to swap with"
    if other.version is None:
        return f"{other.name} has no version to swap in; deploy one first"
    if production.version is None:
        return "production has no version yet; deploy one to production first"
    if problems:
        return f"{other.version.label} in {other.name} is not healthy: " + "; ".join(problems)
    return None


def refuse(service, reason: str, actor, operation):
    Event.record(service, "swap", f"swap refused: {reason}", Outcome.FAILED, actor, operation)
    raise SwapRefused(reason)
