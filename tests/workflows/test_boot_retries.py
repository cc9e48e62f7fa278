"""Node creation on a failing cloud: retried with backoff, each attempt an event, nothing left behind."""

import time

import pytest

from services.choices import NodeState, OperationState, ServiceState
from services.models import Event, Node
from services.nodes import Backoff
from workflows import lifecycle
from workflows.scaling import request_scale


def create(queue, owner):
    made = {}

    def request():
        made["service"], operation = lifecycle.create(owner, "shop", "python")
        return operation

    operation = queue.start(request)
    return made["service"], operation


def boot_events(service) -> list[tuple[str, str]]:
    return list(
        Event.objects.filter(service=service, action="node.boot")
        .order_by("created", "id")
        .values_list("outcome", "message")
    )


def test_it_retries_a_refused_creation_and_the_operation_succeeds(alice, cloud, queue, pauses):
    cloud.refusing = 2

    service, operation = create(queue, alice)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert Node.objects.get(service=service, state=NodeState.RUNNING).is_proxy
    assert Node.objects.filter(service=service, state=NodeState.DESTROYED).count() == 2
    assert len(cloud.list_nodes()) == 1
    assert pauses == [2, 4]
    events = boot_events(service)
    assert [outcome for outcome, _ in events] == ["info", "failed", "info", "failed", "info", "succeeded"]
    assert events[0][1].endswith("(proxy, backend) (attempt 1 of 3)")
    assert "InstanceLimitExceeded: try again later; trying again in 2 s" in events[1][1]
    assert events[3][1].endswith("trying again in 4 s")
    assert events[4][1].endswith("(attempt 3 of 3)")


def test_a_node_that_stops_while_booting_is_noticed_at_once_and_quoted(alice, cloud, queue, settings):
    settings.CONPAAS_BOOT_TIMEOUT = 10  # not waited for: the cloud says the node stopped
    cloud.dying = 1
    cloud.log_lines = ["agent.log: Traceback (most recent call last):", "agent.log: OSError: no haproxy"]
    began = time.monotonic()

    service, operation = create(queue, alice)

    assert time.monotonic() - began < 5
    assert operation.state == OperationState.SUCCEEDED, operation.error
    dead = Node.objects.get(service=service, state=NodeState.DESTROYED)
    assert dead.error.startswith(f"node {dead.name} stopped while booting (the cloud reports it stopped)")
    assert dead.error.endswith(
        "its last log lines: agent.log: Traceback (most recent call last): | agent.log: OSError: no haproxy"
    )
    assert any(message.startswith(dead.error) for _, message in boot_events(service))
    assert [node.name for node in cloud.list_nodes()] == [Node.objects.get(service=service, state="running").name]


def test_a_scale_succeeds_when_a_retry_does(service, proxy, cloud, queue, pauses):
    cloud.refusing = 1

    operation = queue.start(lambda: request_scale(service, "backend", 2, service.owner))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert service.backend_node_list().filter(state=NodeState.RUNNING).count() == 2
    assert pauses == [2]


def test_it_gives_up_after_the_last_attempt_and_leaves_nothing_behind(alice, cloud, queue, pauses, settings):
    settings.CONPAAS_BOOT_ATTEMPTS = 2
    cloud.refusing = 2

    service, operation = create(queue, alice)

    assert operation.state == OperationState.FAILED
    assert operation.error.endswith("InstanceLimitExceeded: try again later (gave up after 2 attempts)")
    service.refresh_from_db()
    assert service.state == ServiceState.FAILED
    assert not service.live_nodes().exists() and cloud.list_nodes() == []
    assert pauses == [2]


def test_one_attempt_means_no_retry(alice, cloud, queue, pauses, settings):
    settings.CONPAAS_BOOT_ATTEMPTS = 1
    cloud.refusing = 1

    service, operation = create(queue, alice)

    assert operation.state == OperationState.FAILED
    assert "gave up" not in operation.error and "attempt" not in boot_events(service)[0][1]
    assert pauses == []


def test_a_failed_attempt_the_cloud_cannot_destroy_stops_the_retries(alice, cloud, queue, pauses, monkeypatch):
    cloud.dying = 1
    monkeypatch.setattr(cloud, "destroy_node", lambda node: (_ for _ in ()).throw(RuntimeError("API down")))

    service, operation = create(queue, alice)

    assert operation.state == OperationState.FAILED
    assert "could not destroy node" in operation.error and "API down" in operation.error
    failed = Node.objects.get(service=service)
    assert failed.state == NodeState.FAILED, "kept, so that the next scale or heal destroys it"
    assert pauses == []


@pytest.mark.parametrize(
    "backoff, pauses",
    [
        (Backoff(attempts=5, first=2), [2, 4, 8, 16]),
        (Backoff(attempts=4, first=10, cap=25), [10, 20, 25]),
        (Backoff(attempts=3, first=0), [0, 0]),
    ],
)
def test_the_pause_doubles_up_to_its_cap(backoff, pauses):
    assert [backoff.pause_after(failed) for failed in range(1, backoff.attempts)] == pauses
