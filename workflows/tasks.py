"""django-q2 entry points: thin, each safe to run twice."""

import logging

from django.conf import settings
from django_q.tasks import async_task

from routing.health import refresh_due, refresh_health
from routing.metrics import roll_up, sample_due
from services import object_storage, operations, replication
from services.choices import OperationKind
from services.models import Operation, Service
from workflows import autoscale, backups, data_services, deploy, healing, lifecycle, reconcile, scaling
from workflows.links import relink

# Which function runs each kind of operation (swaps and route changes run synchronously).
WORK = {
    OperationKind.CREATE: lifecycle.run_create,
    OperationKind.DEPLOY: deploy.run_deploy,
    OperationKind.SCALE: scaling.scale,
    OperationKind.DELETE: lifecycle.run_delete,
    OperationKind.RECONCILE: reconcile.reconcile,
    OperationKind.HEAL: healing.heal,
    OperationKind.LOAD: data_services.run_load,
    OperationKind.BACKUP: backups.run_backup,
    OperationKind.RESTORE: backups.run_restore,
}

log = logging.getLogger("conpaas.health")
# Seconds between two counts of a storage service's buckets (a listing of every object).
STORAGE_COUNT_EVERY = 60


def run_operation(operation_id: int) -> None:
    operation = Operation.objects.filter(pk=operation_id).select_related("service").first()
    if operation is None or operation.done:
        return
    operations.run(operation, then_refresh_health(then_relink(WORK[operation.kind])))


# The operations after which a service may answer at another address than before.
MOVES = (
    OperationKind.CREATE,
    OperationKind.RECONCILE,
    OperationKind.HEAL,
    OperationKind.SCALE,
    OperationKind.RESTORE,
)


def then_relink(work):
    """`work`, then, if it may have moved the service, pass its address to the services linking it."""

    def run(operation):
        result = work(operation)
        if operation.kind in MOVES:
            try:
                relink(operation.service)
            except Exception:
                # The operation's own outcome stands; the next move of the service tries again.
                log.exception("could not pass the address of %s to the services linking it", operation.service_name)
        return result

    return run


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


def refresh_running_health() -> int:
    """The timer's task (queued by `manage.py up` every CONPAAS_HEALTH_REFRESH seconds): refresh the
    running services not refreshed since; one query when there is none. Returns how many."""
    # A little slack, so a pass a moment early does not skip a service to the next one.
    max_age = max(1, settings.CONPAAS_HEALTH_REFRESH) * 0.9
    # Storage services' buckets are counted on the same timer: pages show the saved counts.
    object_storage.count_due(max_age=max(max_age, STORAGE_COUNT_EVERY))
    # Replicated data services' members: roles and lag for pages, a failover noticed as an event.
    replication.refresh_due(max_age=max_age)
    return refresh_due(max_age=max_age)


def queue_health_refresh() -> None:
    # Not saved as a result: one every few seconds would push the operations' results out.
    async_task("workflows.tasks.refresh_running_health", task_name="refresh-health", save=False)


def check_running_nodes() -> int:
    """The self-healing timer's task (queued by `manage.py up` every CONPAAS_HEAL_INTERVAL
    seconds): check the running services not checked since; returns how many heals it started."""
    return healing.check_due(max_age=max(1, settings.CONPAAS_HEAL_INTERVAL) * 0.9)


def queue_heal_check() -> None:
    async_task("workflows.tasks.check_running_nodes", task_name="check-nodes", save=False)


def sample_metrics() -> int:
    """The metrics timer's task (queued by `manage.py up` every CONPAAS_METRICS_INTERVAL seconds):
    save the figures of every running service, let the autoscaler decide for those it scales,
    and keep the history bounded. Returns how many services were sampled."""
    sampled = sample_due()
    autoscale.evaluate_all(sampled)
    roll_up()
    return len(sampled)


def queue_metrics_sample() -> None:
    async_task("workflows.tasks.sample_metrics", task_name="sample-metrics", save=False)


def check_backups() -> int:
    """The backups timer's task (queued by `manage.py up` every CONPAAS_BACKUP_CHECK_INTERVAL
    seconds): start the backups their policies make due, and save how far each PostgreSQL
    service's WAL is archived. Returns how many backups it started."""
    backups.refresh_archives()
    return backups.start_due()


def queue_backup_check() -> None:
    async_task("workflows.tasks.check_backups", task_name="check-backups", save=False)
