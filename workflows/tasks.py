"""django-q2 entry points: thin, each safe to run twice."""

import logging
import time

from django.conf import settings
from django_q.models import Schedule

from routing.health import refresh_due, refresh_health
from services import operations
from services.choices import OperationKind
from services.models import Operation, Service
from workflows import deploy, lifecycle, reconcile, scaling

# Which function runs each kind of operation (swaps and route changes run synchronously).
WORK = {
    OperationKind.CREATE: lifecycle.run_create,
    OperationKind.DEPLOY: deploy.run_deploy,
    OperationKind.SCALE: scaling.scale,
    OperationKind.DELETE: lifecycle.run_delete,
    OperationKind.RECONCILE: reconcile.reconcile,
}

log = logging.getLogger("conpaas.health")

HEALTH_SCHEDULE = "refresh health"
# django-q2 runs a schedule at most once a minute: each run refreshes for about that minute.
SCHEDULE_PERIOD = 60


def run_operation(operation_id: int) -> None:
    operation = Operation.objects.filter(pk=operation_id).select_related("service").first()
    if operation is None or operation.done:
        return
    operations.run(operation, then_refresh_health(WORK[operation.kind]))


def then_refresh_health(work):
    """`work`, then the saved health of its service, whatever happened, before the operation ends
    (so the console, which reloads when the operation ends, shows the health it left behind)."""

    def run(operation):
        try:
            return work(operation)
        finally:
            try:
                service = Service.objects.filter(pk=operation.service_id).first()
                if service is not None and operation.kind != OperationKind.DELETE:
                    refresh_health(service)
            except Exception:
                # The operation's own outcome stands; the timer refreshes this service later.
                log.exception(
                    "could not refresh the health of %s after operation %s", operation.service_name, operation.pk
                )

    return run


def refresh_running_health(period: float = SCHEDULE_PERIOD) -> int:
    """The timer: every CONPAAS_HEALTH_REFRESH seconds during `period`, refresh the running services
    not refreshed since (one query when there is none); returns how many refreshes it made."""
    interval = max(1, settings.CONPAAS_HEALTH_REFRESH)
    began = time.monotonic()
    refreshed = 0
    while True:
        # A little slack, so a pass a moment early does not skip a service to the next one.
        refreshed += refresh_due(max_age=interval * 0.9)
        next_pass = began + interval * (int((time.monotonic() - began) / interval) + 1)
        if next_pass - began >= period:
            return refreshed
        time.sleep(max(0.0, next_pass - time.monotonic()))


def schedule_health_refresh() -> Schedule:
    """Create the timer's schedule, or put it back as it should be (idempotent; `manage.py up`)."""
    schedule, _ = Schedule.objects.update_or_create(
        name=HEALTH_SCHEDULE,
        defaults={
            "func": "workflows.tasks.refresh_running_health",
            "schedule_type": Schedule.MINUTES,
            "minutes": SCHEDULE_PERIOD // 60,
            "repeats": -1,
        },
    )
    return schedule
