"""The autoscaler against the fake agent and the in-memory cloud: the metrics timer's pass
samples the routers, decides, and scales through the one scaling workflow; a fake clock."""

from datetime import timedelta

import pytest
from django.utils import timezone

from routing.metrics import sample_due
from services.choices import NodeState, OperationKind, OperationState
from services.models import Event, Operation
from workflows import autoscale
from workflows.models import Autoscaling


@pytest.fixture
def clock(monkeypatch):
    """Fake time for everything that asks django.utils.timezone.now(): the samples, the decisions,
    when operations finish."""

    class Clock:
        now = timezone.now()

        def advance(self, seconds):
            self.now += timedelta(seconds=seconds)

    fake = Clock()
    monkeypatch.setattr(timezone, "now", lambda: fake.now)
    return fake


@pytest.fixture(autouse=True)
def interval(settings):
    settings.CONPAAS_METRICS_INTERVAL = 5


def load(fleet, proxy, arrivals, served, p95):
    fleet.figures[proxy.name] = {
        "production": {
            "requests": int(arrivals * 5),
            "request_rate": arrivals,
            "arrival_rate": arrivals,
            "served_rate": served,
            "p50_ms": p95 / 2,
            "p95_ms": p95,
        }
    }


def passes(queue, clock, seconds):
    """The metrics timer's passes every 5 s for `seconds`, each running what it queued."""
    for _ in range(seconds // 5):
        clock.advance(5)
        with queue.capture_on_commit(execute=True):
            autoscale.evaluate_all(sample_due(clock.now), clock.now)
        queue.run()


def backend_nodes(service) -> int:
    return service.backend_node_list().filter(state=NodeState.RUNNING).count()


def test_it_scales_out_under_overload_then_back_in_after_the_cooldown(service, proxy, fleet, queue, clock):
    Autoscaling.objects.create(service=service, enabled=True, target_p95_ms=250, max_nodes=6, cooldown_s=30)

    load(fleet, proxy, arrivals=160.0, served=40.0, p95=900.0)
    passes(queue, clock, 10)

    assert backend_nodes(service) == 5
    scale = Operation.objects.get(kind=OperationKind.SCALE)
    assert scale.state == OperationState.SUCCEEDED and scale.params == {"role": "backend", "nodes": 5}
    decision = Event.objects.filter(action="autoscale").first()
    assert decision.message == (
        "autoscale: scale out 1 → 5 backend node(s): over the target of 250 ms "
        "(p95 900 ms, 160.0 req/s arriving, 40.0 answered, a node answers about 40.0 req/s)"
    )
    assert decision.actor is None, "the system decided"
    policy = Autoscaling.objects.get(service=service)
    assert policy.node_capacity == 40.0 and policy.last_decision["action"] == "out"

    # Five nodes hold it: nothing changes for a minute.
    load(fleet, proxy, arrivals=160.0, served=160.0, p95=180.0)
    passes(queue, clock, 60)
    assert Operation.objects.filter(kind=OperationKind.SCALE).count() == 1
    assert Autoscaling.objects.get(service=service).last_decision["action"] == "hold"

    # The load falls: one scale-in, to the fewest nodes that hold it.
    load(fleet, proxy, arrivals=20.0, served=20.0, p95=60.0)
    passes(queue, clock, 25)
    assert backend_nodes(service) == 5, "not before the p95 of a whole cool-down is well under the target"
    passes(queue, clock, 10)
    assert backend_nodes(service) == 1
    scale_in = Operation.objects.filter(kind=OperationKind.SCALE).first()
    assert scale_in.params["nodes"] == 1 and scale_in.state == OperationState.SUCCEEDED
    assert (
        Event.objects.filter(action="autoscale")
        .first()
        .message.startswith(
            "autoscale: scale in 5 → 1 backend node(s): under 150 ms (60% of the target) for 30 s (p95 60 ms"
        )
    )
    passes(queue, clock, 60)
    assert Operation.objects.filter(kind=OperationKind.SCALE).count() == 2, "and it stays there"


def test_it_leaves_a_service_alone_while_it_is_off_or_busy(service, proxy, fleet, queue, clock):
    policy = Autoscaling.objects.create(service=service, enabled=False)
    load(fleet, proxy, arrivals=160.0, served=40.0, p95=900.0)
    passes(queue, clock, 20)
    assert not Operation.objects.filter(kind=OperationKind.SCALE).exists()

    Autoscaling.objects.filter(pk=policy.pk).update(enabled=True)
    Operation.objects.create(service=service, kind=OperationKind.DEPLOY, state=OperationState.RUNNING)
    passes(queue, clock, 20)
    assert not Operation.objects.filter(kind=OperationKind.SCALE).exists()
    assert Autoscaling.objects.get(pk=policy.pk).last_decision is None


def test_a_scale_the_quota_refuses_is_an_event_and_nothing_more(service, proxy, fleet, queue, clock, settings):
    Autoscaling.objects.create(service=service, enabled=True, max_nodes=4)
    settings.CONPAAS_QUOTA_NODES = 2  # lowered by an operator after the policy was set

    load(fleet, proxy, arrivals=160.0, served=40.0, p95=900.0)
    passes(queue, clock, 10)

    assert not Operation.objects.filter(kind=OperationKind.SCALE).exists()
    refused = Event.objects.filter(action="autoscale").first()
    assert refused.outcome == "failed"
    assert refused.message.startswith("autoscale: scale out 1 → 4 backend node(s)")
    assert refused.message.endswith(
        "; not done: quota exceeded: nodes (2) — your services have 1 nodes and this would make 4; "
        "scale a service down or ask an operator to raise your quota"
    )


def test_reaching_the_maximum_is_said_once(service, proxy, fleet, queue, clock):
    Autoscaling.objects.create(service=service, enabled=True, max_nodes=1)
    load(fleet, proxy, arrivals=160.0, served=40.0, p95=900.0)
    passes(queue, clock, 30)

    limited = list(Event.objects.filter(action="autoscale"))
    assert len(limited) == 1 and limited[0].outcome == "failed"
    assert limited[0].message.startswith("autoscale: over the target of 250 ms at the maximum of 1 node(s) (p95 900 ms")
