import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from services import operations
from services.choices import OperationKind, OperationState, Outcome
from services.models import Event, Operation, Service
from tests.factories import OperationFactory, ServiceFactory
from workflows import tasks
from workflows.swap import swap

from .conftest import env_version


def scale_operation(service):
    return OperationFactory(service=service, kind=OperationKind.SCALE, params={"role": "backend", "nodes": 1})


def test_it_keeps_a_second_operation_pending_until_the_first_finishes(service, queue, monkeypatch):
    first, second = scale_operation(service), scale_operation(service)
    seen = []

    def work(operation, scale=tasks.WORK[OperationKind.SCALE]):
        if operation.pk == first.pk:
            tasks.run_operation(second.pk)  # another worker picks the second one up meanwhile
            seen.append(Operation.objects.get(pk=second.pk).state)
        return scale(operation)

    monkeypatch.setitem(tasks.WORK, OperationKind.SCALE, work)

    tasks.run_operation(first.pk)

    assert seen == [OperationState.PENDING]
    assert Operation.objects.get(pk=first.pk).state == OperationState.SUCCEEDED
    assert queue == [second.pk]  # the first started it when it released the service
    queue.run()
    assert Operation.objects.get(pk=second.pk).state == OperationState.SUCCEEDED
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_lets_one_operation_claim_a_service_at_a_time(service):
    first, second = scale_operation(service), scale_operation(service)

    assert operations.claim(first)
    assert not operations.claim(second)
    assert not operations.claim(first)  # not twice either
    assert Operation.objects.get(pk=second.pk).state == OperationState.PENDING
    assert Service.objects.get(pk=service.pk).locked_by_id == first.pk


def test_it_refuses_a_swap_while_another_operation_holds_the_service(service, fleet):
    holder = scale_operation(service)
    operations.claim(holder)
    count = Operation.objects.count()

    with pytest.raises(operations.ServiceBusy) as busy:
        swap(service, "development", service.owner)

    assert busy.value.holder == holder
    assert Operation.objects.count() == count  # the swap's own operation is gone again
    assert env_version(service, "production") == "v1"
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] is None  # no flip was tried


def test_it_releases_the_service_when_an_operation_fails(service, proxy, fleet, queue):
    failing = OperationFactory(
        service=service,
        kind=OperationKind.DEPLOY,
        params={"environment": "production", "version": service.versions.get(label="v2").pk},
    )
    waiting = scale_operation(service)
    fleet.unreachable.add(proxy.name)

    tasks.run_operation(failing.pk)

    failing.refresh_from_db()
    assert failing.state == OperationState.FAILED
    assert "could not start on node" in failing.error
    assert Service.objects.get(pk=service.pk).locked_by is None
    assert queue == [waiting.pk]


def test_it_fails_operations_interrupted_by_a_restart_and_starts_the_next(service, queue):
    interrupted, waiting = scale_operation(service), scale_operation(service)
    operations.claim(interrupted)

    assert operations.recover_interrupted() == 1

    interrupted.refresh_from_db()
    assert interrupted.state == OperationState.FAILED
    assert interrupted.error == "interrupted by a control-plane restart"
    assert Service.objects.get(pk=service.pk).locked_by is None
    assert set(queue) == {waiting.pk}  # enqueued by finish() and by the restart sweep: runs once
    queue.run()
    assert Operation.objects.get(pk=waiting.pk).state == OperationState.SUCCEEDED


T0 = datetime(2030, 1, 1, tzinfo=UTC)  # the injected clock


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def test_it_fails_an_operation_whose_lease_ran_out_and_starts_the_next(service, queue, settings):
    settings.CONPAAS_OPERATION_LEASE = 30
    running, waiting = scale_operation(service), scale_operation(service)
    assert operations.claim(running, now=T0)
    running.set_progress("Adding a backend node")

    assert operations.expire_leases(now=seconds(29)) == 0
    assert operations.renew(running, now=seconds(20))  # its worker's heartbeat
    assert operations.expire_leases(now=seconds(49)) == 0
    assert queue == []
    assert operations.expire_leases(now=seconds(51)) == 1

    running.refresh_from_db()
    assert running.state == OperationState.FAILED
    assert running.error == (
        "interrupted by the loss of its worker (no sign of life for 30 s: killed, or its machine went away)"
        " while adding a backend node"
    )
    assert Service.objects.get(pk=service.pk).locked_by is None
    event = Event.objects.get(operation=running)
    assert (event.outcome, event.message, event.service) == (Outcome.FAILED, running.error, service)
    assert not operations.renew(running, now=seconds(52)), "a late heartbeat learns it lost the lease"
    assert operations.expire_leases(now=seconds(100)) == 0, "once"
    assert queue == [waiting.pk]
    queue.run()
    assert Operation.objects.get(pk=waiting.pk).state == OperationState.SUCCEEDED


def test_it_drops_the_outcome_of_a_worker_that_lost_its_lease(service, queue, monkeypatch):
    stalled, successor = scale_operation(service), scale_operation(service)

    def work(operation):
        # The worker stalls past its lease: the sweep fails its operation, the next one takes the service.
        operations.expire_leases(now=timezone.now() + timedelta(hours=1))
        assert operations.claim(successor)
        return "scaled"

    monkeypatch.setitem(tasks.WORK, OperationKind.SCALE, work)

    tasks.run_operation(stalled.pk)

    stalled.refresh_from_db()
    assert stalled.state == OperationState.FAILED
    assert stalled.error.startswith("interrupted by the loss of its worker")
    assert list(Event.objects.filter(operation=stalled).values_list("outcome", flat=True)) == [Outcome.FAILED]
    assert Service.objects.get(pk=service.pk).locked_by_id == successor.pk, "the stalled worker released nothing"


@pytest.mark.django_db(transaction=True)
def test_it_renews_the_lease_while_the_work_runs(service, settings, monkeypatch):
    settings.CONPAAS_OPERATION_LEASE = 0.3
    operation = scale_operation(service)
    swept = []

    def work(operation):
        time.sleep(1)  # three leases long
        swept.append(operations.expire_leases())
        return "scaled"

    monkeypatch.setitem(tasks.WORK, OperationKind.SCALE, work)

    tasks.run_operation(operation.pk)

    assert swept == [0]
    assert Operation.objects.get(pk=operation.pk).state == OperationState.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_one_thread_renews_the_leases_of_all_the_operations_of_a_process(service, settings):
    settings.CONPAAS_OPERATION_LEASE = 0.3
    first, second = scale_operation(service), scale_operation(ServiceFactory())
    assert operations.claim(first) and operations.claim(second)

    with operations.heartbeat(first), operations.heartbeat(second):
        time.sleep(1)  # three leases long
        assert operations.expire_leases() == 0
        keepers = [thread for thread in threading.enumerate() if thread.name == "operation-leases"]
    assert len(keepers) == 1 and keepers[0] is operations.leases.thread
    assert operations.leases.held == {}, "an ended operation is not renewed"


def test_a_forked_worker_starts_its_own_lease_keeper(service):
    operation = scale_operation(service)
    with operations.heartbeat(operation):  # the parent's keeper runs and holds it
        child = os.fork()
        if child == 0:  # a task worker forked by its cluster: none of the parent's threads
            keeper = operations.leases
            os._exit(0 if keeper.thread is None and keeper.held == {} else 1)
        _, status = os.waitpid(child, 0)
        assert operations.leases.thread.is_alive() and operation.pk in operations.leases.held
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_operation_shorter_than_a_third_of_its_lease_is_never_renewed(service, settings, monkeypatch):
    settings.CONPAAS_OPERATION_LEASE = 30
    renewed = []
    monkeypatch.setattr(operations, "renew", lambda operation, now=None: renewed.append(operation) or True)
    operation = scale_operation(service)
    assert operations.claim(operation)

    with operations.heartbeat(operation):
        time.sleep(0.2)

    assert renewed == []


def test_it_runs_a_limited_number_of_one_users_operations_at_once(service, queue, settings):
    settings.CONPAAS_USER_OPERATIONS = 1
    first = scale_operation(service)
    second = scale_operation(ServiceFactory(owner=service.owner))
    others = scale_operation(ServiceFactory())

    assert operations.claim(first)
    assert not operations.claim(second)
    assert operations.claim(others), "another user's operation starts"

    second.refresh_from_db()
    assert second.state == OperationState.PENDING
    assert second.progress == (
        "waiting: at most 1 of your operations run at a time; this one starts when one of them ends"
    )
    assert second.started is None and Service.objects.get(pk=second.service_id).locked_by is None
    operations.finish(first)
    assert queue == [second.pk]
    assert operations.claim(second)
    assert Operation.objects.get(pk=second.pk).progress == ""


def test_it_starts_a_services_operations_in_the_order_they_were_requested(service, queue):
    first, second = scale_operation(service), scale_operation(service)

    assert not operations.claim(second), "the service is free, but the first comes first"
    assert Operation.objects.get(pk=second.pk).progress == f"waiting for scale operation #{first.pk} to finish"
    assert queue == [first.pk], "the first is handed to the workers again, in case its task was lost"
    assert operations.claim(first)
    assert not operations.claim(second)
    assert Operation.objects.get(pk=second.pk).state == OperationState.PENDING
