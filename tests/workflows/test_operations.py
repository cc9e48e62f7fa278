import pytest

from services import operations
from services.choices import OperationKind, OperationState
from services.models import Operation, Service
from tests.factories import OperationFactory
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
