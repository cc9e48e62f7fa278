"""Operations: long-running actions run by the task workers, one at a time per service.

A service is held by at most one operation: `claim` takes it with a conditional UPDATE and
checks the row count, so any number of workers can race for it safely. An operation that finds
its service held, or its owner running CONPAAS_USER_OPERATIONS already, stays pending; whoever
ends an operation starts the next pending one of its service and its owner's waiting ones.

A running operation holds a lease that its worker process renews (`heartbeat`: one thread per
process renews the leases of all its operations); when the worker is killed or its machine goes
away, the lease runs out and `expire_leases` (called by `manage.py up` every few seconds) fails
the operation and releases its service.
"""

import logging
import os
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
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


def lease_length() -> timedelta:
    return timedelta(seconds=settings.CONPAAS_OPERATION_LEASE)


def claim(operation: Operation, now: datetime | None = None) -> bool:
    """Start the operation if its owner may run one more, it is the next on its service and the
    service is free; else it waits, saying why in its progress."""
    now = now or timezone.now()
    earlier = None
    with transaction.atomic():
        waiting = user_limit_reached(operation.owner_id)
        if not waiting:
            # A service's operations start in the order they were requested (two deploys in a row).
            first = pending_on(operation.service_id).first()
            earlier = first if first is not None and first.pk != operation.pk else None
            waiting = waiting_for(earlier)
        if not waiting:
            if Service.objects.filter(pk=operation.service_id, locked_by__isnull=True).update(locked_by=operation):
                if Operation.objects.filter(pk=operation.pk, state=OperationState.PENDING).update(
                    state=OperationState.RUNNING, started=now, lease_expires=now + lease_length(), progress=""
                ):
                    operation.state, operation.started, operation.progress = OperationState.RUNNING, now, ""
                    return True
                transaction.set_rollback(True)
                return False
            waiting = waiting_for(holder_of(operation.service_id))
    if waiting:
        Operation.objects.filter(pk=operation.pk, state=OperationState.PENDING).update(progress=waiting)
    if earlier is not None:
        enqueue(earlier.pk)  # in case its task was lost: this one waits for it, nothing else starts it
    return False


def user_limit_reached(owner_id: int | None) -> str:
    """Why an operation of this user waits for one of theirs to end, or "" (the platform's own never wait)."""
    if owner_id is None:
        return ""
    # The owner's row is locked so that two claims count one after the other (on PostgreSQL;
    # SQLite's IMMEDIATE transactions already do).
    list(get_user_model().objects.select_for_update().filter(pk=owner_id).values_list("pk"))
    limit = settings.CONPAAS_USER_OPERATIONS
    if Operation.objects.filter(owner_id=owner_id, state=OperationState.RUNNING).count() < limit:
        return ""
    return f"waiting: at most {limit} of your operations run at a time; this one starts when one of them ends"


def waiting_for(operation: Operation | None) -> str:
    return f"waiting for {operation.kind} operation #{operation.pk} to finish" if operation else ""


def pending_on(service_id: int | None):
    return Operation.objects.filter(service_id=service_id, state=OperationState.PENDING).order_by("created", "id")


def holder_of(service_id: int) -> Operation | None:
    holder = Service.objects.filter(pk=service_id).values_list("locked_by", flat=True).first()
    return Operation.objects.filter(pk=holder).first() if holder else None


def renew(operation: Operation, now: datetime | None = None) -> bool:
    """Extend the operation's lease; False once it has ended (failed when its lease ran out)."""
    now = now or timezone.now()
    running = Operation.objects.filter(pk=operation.pk, state=OperationState.RUNNING)
    return bool(running.update(lease_expires=now + lease_length()))


class LeaseKeeper:
    """Renews the leases of the operations this process runs, from one thread shared by all of
    them (started at the first): each lease a third of its length after it was last set, so an
    operation shorter than that (a swap) costs no thread and no write, and a long one (a deploy
    waiting minutes on a node) is renewed as long as it runs."""

    def __init__(self):
        self.changed = threading.Condition()
        self.held: dict[int, tuple[Operation, float]] = {}  # pk -> (operation, its lease set at, monotonic)
        self.thread: threading.Thread | None = None

    def add(self, operation: Operation) -> None:
        with self.changed:
            self.held[operation.pk] = (operation, time.monotonic())
            if self.thread is None:
                self.thread = threading.Thread(target=self.keep, name="operation-leases", daemon=True)
                self.thread.start()
            self.changed.notify()  # the lease length may have changed (tests): the thread looks again

    def drop(self, operation: Operation) -> bool:
        """Stop renewing the operation's lease; False when it was not held (it just ended)."""
        with self.changed:
            return self.held.pop(operation.pk, None) is not None

    def keep(self) -> None:
        while True:
            with self.changed:
                period = settings.CONPAAS_OPERATION_LEASE / 3
                now = time.monotonic()
                due = [operation for operation, since in self.held.values() if now - since >= period]
                if not due:
                    self.changed.wait(min((since + period - now for _, since in self.held.values()), default=None))
                    continue
                for operation in due:
                    self.held[operation.pk] = (operation, now)
            self.renew(due)

    def renew(self, due: list[Operation]) -> None:
        try:
            for operation in due:
                try:
                    if not renew(operation) and self.drop(operation):
                        log.warning("operation %s lost its lease; what it still does is not recorded", operation.pk)
                except DatabaseError:
                    log.exception("could not renew the lease of operation %s; trying again", operation.pk)
        finally:
            connection.close()  # this thread's own: renewals are seconds apart


leases = LeaseKeeper()


def _new_lease_keeper() -> None:
    """A forked worker has none of its parent's threads (nor its operations): it starts its own."""
    global leases
    leases = LeaseKeeper()


os.register_at_fork(after_in_child=_new_lease_keeper)


@contextmanager
def heartbeat(operation: Operation):
    """Renew the operation's lease while the block runs (LeaseKeeper): a worker that waits
    minutes on a node (a pip install, a boot) still shows it is alive."""
    keeper = leases
    keeper.add(operation)
    try:
        yield
    finally:
        keeper.drop(operation)


def finish(
    operation: Operation, error: str = "", record: str | None = None, expired_by: datetime | None = None
) -> bool:
    """End the operation (failed when `error`), release its service, record `record` as its Event
    if given, in one step; then start what waited. Returns False, changing nothing, when the
    operation had already ended (failed when its lease ran out, while a slow worker went on), or,
    with `expired_by`, when its lease was renewed meanwhile."""
    state = OperationState.FAILED if error else OperationState.SUCCEEDED
    finished = timezone.now()
    with transaction.atomic():
        ending = Operation.objects.filter(pk=operation.pk, state__in=(OperationState.PENDING, OperationState.RUNNING))
        if expired_by is not None:
            ending = ending.filter(lease_expires__lt=expired_by)
        if not ending.update(state=state, error=error, finished=finished, progress=operation.progress):
            return False
        Service.objects.filter(pk=operation.service_id, locked_by=operation).update(locked_by=None)
        if record is not None:
            # The Event and the end together: the console reloads when the operation ends.
            service = Service.objects.filter(pk=operation.service_id).first()
            outcome = Outcome.FAILED if error else Outcome.SUCCEEDED
            Event.record(service, operation.kind, record, outcome=outcome, operation=operation)
    operation.state, operation.error, operation.finished = state, error, finished
    if operation.kind == OperationKind.DELETE:
        end_orphans()
    start_next(operation)
    return True


def end_orphans() -> None:
    """Operations queued behind a deletion lost their service: they end, they do not wait forever."""
    Operation.objects.filter(service__isnull=True, state=OperationState.PENDING).update(
        state=OperationState.FAILED, error="the service was deleted", finished=timezone.now()
    )


def start_next(ended: Operation) -> None:
    """Hand the workers what the end of `ended` lets start: the next operation of its service, and
    of each free service where its owner has operations waiting (one that still cannot start
    waits again). One query finds both, usually none."""
    waiting = Q(service_id=ended.service_id)
    if ended.owner_id is not None:
        waiting |= Q(owner_id=ended.owner_id, service__locked_by__isnull=True)
    pending = Operation.objects.filter(waiting, state=OperationState.PENDING)
    start_first(set(pending.values_list("service_id", flat=True)))


def resume_pending() -> None:
    """Hand the workers the next operation of every service again: tasks that stopped workers
    had taken are lost with them (a second task for one operation does nothing)."""
    start_first(set(Operation.objects.filter(state=OperationState.PENDING).values_list("service_id", flat=True)))


def start_first(service_ids: set) -> None:
    for service_id in service_ids - {None}:
        if first := pending_on(service_id).first():
            enqueue(first.pk)


def run(operation: Operation, work) -> None:
    """Run `work(operation)` holding the service; record how it ended."""
    if operation.service_id is None:
        finish(operation, "the service was deleted before the operation could start")
        return
    if not claim(operation):
        return  # it waits: whatever ends first (its service's holder, its owner's) starts it
    error, outcome_message = "internal error (the worker stopped)", ""
    try:
        with heartbeat(operation):
            outcome_message = work(operation)
        error = ""
    except ConpaasError as exc:
        error = str(exc)
    except Exception as exc:
        log.exception("operation %s failed unexpectedly", operation.pk)
        error = f"internal error ({type(exc).__name__}: {exc})"
    finally:
        # Whatever happened above, the service is released and the next operation starts (if
        # this fails too, the lease runs out and expire_leases does it).
        if not finish(operation, error, record=error or outcome_message or f"{operation.kind} finished"):
            log.warning("operation %s was failed when its lease ran out; its outcome is dropped", operation.pk)


@contextmanager
def holding(service: Service, kind: str, owner, params: dict | None = None):
    """Hold the service for a short synchronous action (a swap), as an operation of its own.

    The block may name its success Event with `record_at_end`: it is written with the end."""
    # Born running, in the transaction that takes the service: a busy service writes nothing.
    now = timezone.now()
    with transaction.atomic():
        operation = Operation.objects.create(
            service=service,
            service_name=service.name,
            owner=owner,
            kind=kind,
            params=params or {},
            state=OperationState.RUNNING,
            started=now,
            lease_expires=now + lease_length(),
        )
        available = Service.objects.filter(pk=service.pk, locked_by__isnull=True).exclude(state=ServiceState.DELETING)
        if not available.update(locked_by=operation):
            if Service.objects.filter(pk=service.pk, state=ServiceState.DELETING).exists():
                raise ServiceDeleting(service)
            raise ServiceBusy(holder_of(service.pk))
    operation.event_at_end = None
    try:
        with heartbeat(operation):
            yield operation
    except Exception as exc:
        if operation.event_at_end is not None:  # it happened, then what followed failed
            Event.record(service, kind, operation.event_at_end, Outcome.SUCCEEDED, operation=operation)
        refused = isinstance(exc, (ConpaasError, ValidationError))  # the request's fault, said in words
        if isinstance(exc, ValidationError):
            error = " ".join(exc.messages)
        else:
            error = str(exc) if refused else f"internal error ({exc})"
        recorded = refused and Event.objects.filter(operation=operation).exists()
        finish(operation, error, record=None if recorded else f"{kind} failed: {error}")
        raise
    else:
        finish(operation, record=operation.event_at_end)


def record_at_end(operation: Operation, message: str) -> None:
    """The held action's success Event (`holding`), written in the transaction that ends the
    operation instead of one of its own; written at once if something after it fails."""
    operation.event_at_end = message


def interrupt(operation: Operation, cause: str, expired_by: datetime | None = None) -> bool:
    """Fail an operation whose worker stopped, saying where it was; see finish() for `expired_by`."""
    where = f" while {operation.progress[:1].lower()}{operation.progress[1:]}" if operation.progress else ""
    operation.progress = ""
    error = f"interrupted by {cause}{where}"
    return finish(operation, error, record=error, expired_by=expired_by)


def expire_leases(now: datetime | None = None) -> int:
    """Fail the running operations whose worker stopped renewing their lease, release their
    services and start what waited; `manage.py up` calls it every few seconds. Returns how many."""
    now = now or timezone.now()
    cause = (
        f"the loss of its worker (no sign of life for {settings.CONPAAS_OPERATION_LEASE} s: killed, or its machine"
        " went away)"
    )
    expired = Operation.objects.filter(state=OperationState.RUNNING, lease_expires__lt=now)
    return sum(interrupt(operation, cause, expired_by=now) for operation in expired)


def recover_interrupted() -> int:
    """At control-plane start: operations left running by a stopped worker failed; release their hold."""
    interrupted = sum(
        interrupt(operation, "a control-plane restart")
        for operation in Operation.objects.filter(state=OperationState.RUNNING)
    )
    end_orphans()
    resume_pending()
    return interrupted
