"""Operations: long-running actions run by the task workers, one at a time per service.

A service is held by at most one operation: `claim` takes it with a conditional UPDATE and
checks the row count, so any number of workers can race for it safely. An operation that finds
its service held stays pending; whoever releases the service starts the next pending one.
"""

import logging
from contextlib import contextmanager

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from services.choices import OperationKind, OperationState, Outcome, ServiceState
from services.errors import Conflict, ConpaasError
from services.models import Event, Operation, Service

log = logging.getLogger("conpaas.operations")


class ServiceBusy(Conflict):
    def __init__(self, holder: Operation | None):
        what = f"{holder.kind} operation #{holder.pk}" if holder else "another operation"
        super().__init__(f"the service is busy with {what}; try again when it has finished")
        self.holder = holder


class ServiceDeleting(ServiceBusy):
    def __init__(self, service):
        Exception.__init__(self, f"{service.name} is being deleted")
        self.holder = None


def start(service: Service, kind: str, owner, params: dict | None = None, message: str = "") -> Operation:
    """Record an operation and hand it to the workers once the caller's transaction commits."""
    if kind != OperationKind.DELETE and Service.objects.filter(pk=service.pk, state=ServiceState.DELETING).exists():
        raise ServiceDeleting(service)
    operation = Operation.objects.create(
        service=service, service_name=service.name, owner=owner, kind=kind, params=params or {}
    )
    Event.record(service, kind, message or f"{kind} requested", actor=owner, operation=operation)
    transaction.on_commit(lambda: enqueue(operation.pk))
    return operation


def enqueue(operation_id: int) -> None:
    async_task(settings.CONPAAS_OPERATION_TASK, operation_id, task_name=f"operation-{operation_id}")


def claim(operation: Operation) -> bool:
    with transaction.atomic():
        if not Service.objects.filter(pk=operation.service_id, locked_by__isnull=True).update(locked_by=operation):
            return False
        started = timezone.now()
        claimed = Operation.objects.filter(pk=operation.pk, state=OperationState.PENDING).update(
            state=OperationState.RUNNING, started=started
        )
        if not claimed:
            transaction.set_rollback(True)
            return False
    operation.state, operation.started = OperationState.RUNNING, started
    return True


def finish(operation: Operation, error: str = "") -> None:
    operation.state = OperationState.FAILED if error else OperationState.SUCCEEDED
    operation.error = error
    operation.finished = timezone.now()
    with transaction.atomic():
        Operation.objects.filter(pk=operation.pk).update(
            state=operation.state, error=error, finished=operation.finished, progress=operation.progress
        )
        Service.objects.filter(pk=operation.service_id, locked_by=operation).update(locked_by=None)
    if operation.kind == OperationKind.DELETE:
        end_orphans()
    start_next(operation.service_id)


def end_orphans() -> None:
    """Operations queued behind a deletion lost their service: they end, they do not wait forever."""
    Operation.objects.filter(service__isnull=True, state=OperationState.PENDING).update(
        state=OperationState.FAILED, error="the service was deleted", finished=timezone.now()
    )


def start_next(service_id: int | None) -> None:
    pending = Operation.objects.filter(service_id=service_id, state=OperationState.PENDING).order_by("created", "id")
    if service_id is not None and (nxt := pending.first()):
        enqueue(nxt.pk)


def run(operation: Operation, work) -> None:
    """Run `work(operation)` holding the service; record how it ended."""
    if operation.service_id is None:
        finish(operation, "the service was deleted before the operation could start")
        return
    if not claim(operation):
        return  # held by another operation, which starts this one when it finishes
    service = operation.service
    error, outcome_message = "internal error (the worker stopped)", ""
    try:
        outcome_message = work(operation)
        error = ""
    except ConpaasError as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("operation %s failed unexpectedly", operation.pk)
        error = f"internal error ({type(exc).__name__}: {exc})"
    finally:
        # Whatever happened above, the service is released and the next operation starts.
        try:
            still_there = Service.objects.filter(pk=service.pk).exists()
            Event.record(
                service if still_there else None,
                operation.kind,
                error or outcome_message or f"{operation.kind} finished",
                outcome=Outcome.FAILED if error else Outcome.SUCCEEDED,
                operation=operation,
            )
        finally:
            finish(operation, error)


@contextmanager
def holding(service: Service, kind: str, owner, params: dict | None = None):
    """Hold the service for a short synchronous action (a swap), as an operation of its own."""
    # Born running: it either takes the service at once or is removed again.
    operation = Operation.objects.create(
        service=service,
        service_name=service.name,
        owner=owner,
        kind=kind,
        params=params or {},
        state=OperationState.RUNNING,
        started=timezone.now(),
    )
    available = Service.objects.filter(pk=service.pk, locked_by__isnull=True).exclude(state=ServiceState.DELETING)
    if not available.update(locked_by=operation):
        if Service.objects.filter(pk=service.pk, state=ServiceState.DELETING).exists():
            Operation.objects.filter(pk=operation.pk).delete()
            raise ServiceDeleting(service)
        holder = Service.objects.filter(pk=service.pk).values_list("locked_by", flat=True).first()
        Operation.objects.filter(pk=operation.pk).delete()
        raise ServiceBusy(Operation.objects.filter(pk=holder).first() if holder else None)
    try:
        yield operation
    except Exception as exc:
        refused = isinstance(exc, (ConpaasError, ValidationError))  # the request's fault, said in words
        if isinstance(exc, ValidationError):
            error = " ".join(exc.messages)
        else:
            error = str(exc) if refused else f"internal error ({exc})"
        if not refused or not Event.objects.filter(operation=operation).exists():
            Event.record(service, kind, f"{kind} failed: {error}", Outcome.FAILED, owner, operation)
        finish(operation, error)
        raise
    else:
        finish(operation)


def recover_interrupted() -> int:
    """At control-plane start: operations left running by a stopped worker failed; release their hold."""
    interrupted = list(Operation.objects.filter(state=OperationState.RUNNING))
    for operation in interrupted:
        operation.progress = ""
        if operation.service_id:
            Event.record(
                operation.service,
                operation.kind,
                "interrupted by a control-plane restart",
                outcome=Outcome.FAILED,
                operation=operation,
            )
        finish(operation, "interrupted by a control-plane restart")
    end_orphans()
    for service_id in set(Operation.objects.filter(state=OperationState.PENDING).values_list("service_id", flat=True)):
        start_next(service_id)
    return len(interrupted)
