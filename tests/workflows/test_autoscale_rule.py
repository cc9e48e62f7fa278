"""The autoscaler's rule (workflows.autoscale.decide), a pure function: given samples and a clock."""

import pytest

from workflows.autoscale import IN, LIMITED, OUT, Policy, Sample, decide

POLICY = Policy(target_p95_ms=250, min_nodes=1, max_nodes=6, cooldown_s=30)
NOW = 10_000.0


@pytest.fixture(autouse=True)
def interval(settings):
    settings.CONPAAS_METRICS_INTERVAL = 5


def samples(seconds: int, p95, arrivals, served=None, requests=None, end=NOW) -> list[Sample]:
    """One sample every 5 s over the `seconds` before `end`, all alike."""
    served = arrivals if served is None else served
    count = requests if requests is not None else int(arrivals * 5)
    return [Sample(end - back, count, arrivals, served, p95) for back in range(seconds - 5, -1, -5)]


def test_it_waits_for_two_samples_since_the_last_change():
    overloaded = samples(60, 900.0, 160.0, 40.0)

    waiting = decide(POLICY, overloaded, nodes=1, now=NOW, last_scaled=NOW - 8)
    assert (waiting.action, waiting.nodes) == ("hold", 1)
    assert waiting.reason == "waiting for figures since the last change"
    assert decide(POLICY, overloaded, nodes=1, now=NOW, last_scaled=NOW - 10).action == OUT


def test_a_saturated_service_gets_the_fewest_nodes_that_serve_what_arrives_in_one_step():
    # 160 requests a second arrive, one node answers 40: five nodes at 80 % of 40 each.
    decision = decide(POLICY, samples(20, 900.0, 160.0, 40.0), nodes=1, now=NOW, last_scaled=None)

    assert (decision.action, decision.nodes) == (OUT, 5)
    assert decision.node_capacity == 40.0
    assert decision.figures == {
        "p95_ms": 900.0,
        "arrival_rate": 160.0,
        "served_rate": 40.0,
        "nodes": 1,
        "node_capacity": 40.0,
    }
    assert decision.reason == "over the target of 250 ms"


def test_just_after_a_step_up_it_sizes_by_the_saturated_samples_and_the_load_as_it_is_now():
    calm = samples(10, 60.0, 20.0, end=NOW - 10)
    stepped = samples(10, 2000.0, 160.0, 40.0)

    decision = decide(POLICY, calm + stepped, nodes=1, now=NOW, last_scaled=None)

    assert (decision.action, decision.nodes) == (OUT, 5), "not 1 node's 20 calm requests a second"
    assert (decision.figures["arrival_rate"], decision.figures["served_rate"]) == (160.0, 40.0)
    assert decision.node_capacity == 40.0


def test_it_scales_out_no_further_than_the_maximum_and_then_says_it_is_limited():
    policy = Policy(250, 1, 4, 30)
    assert decide(policy, samples(20, 900.0, 160.0, 40.0), 1, NOW, None).nodes == 4

    limited = decide(policy, samples(20, 600.0, 160.0, 140.0), 4, NOW, None)
    assert (limited.action, limited.nodes) == (LIMITED, 4)
    assert limited.reason == "over the target of 250 ms at the maximum of 4 node(s)"


def test_without_a_measured_capacity_it_adds_one_node_at_a_time():
    # Keeping up with what arrives, yet slow: no saturation to measure a node by.
    decision = decide(POLICY, samples(20, 400.0, 30.0, 30.0), nodes=2, now=NOW, last_scaled=None)
    assert (decision.action, decision.nodes) == (OUT, 3)
    assert decision.node_capacity is None
    unknown = [Sample(NOW - back, 150, 160.0, None, 400.0) for back in (15, 10, 5, 0)]
    no_served = decide(POLICY, unknown, nodes=2, now=NOW, last_scaled=None)
    assert (no_served.action, no_served.nodes) == (OUT, 3), "older routers say nothing of what is served"


def test_a_miss_is_confirmed_by_the_last_two_samples():
    calm = samples(15, 60.0, 20.0, end=NOW - 5)
    first = [Sample(NOW, 300, 60.0, 24.0, 2000.0)]  # a step up 2 s before this sample ended

    waiting = decide(POLICY, calm + first, nodes=1, now=NOW, last_scaled=None)
    assert (waiting.action, waiting.nodes) == ("hold", 1)
    assert waiting.reason == "over the target of 250 ms in the window; waiting for the next sample"

    second = [Sample(NOW + 5, 750, 150.0, 38.0, 4000.0)]
    decision = decide(POLICY, calm + first + second, nodes=1, now=NOW + 5, last_scaled=None)
    assert (decision.action, decision.nodes) == (OUT, 5)  # 150 / (38 × 0.8): the most a node answered
    assert decision.node_capacity == 38.0


def test_a_backlog_that_drains_is_waited_for():
    # Just scaled out: the nodes answer more than arrives while the queue empties.
    decision = decide(POLICY, samples(20, 2000.0, 160.0, 200.0), nodes=5, now=NOW, last_scaled=NOW - 15)
    assert (decision.action, decision.nodes) == ("hold", 5)
    assert "backlog drains" in decision.reason


def test_it_scales_in_to_the_fewest_nodes_that_hold_the_load_once_the_cooldown_is_over():
    policy = Policy(250, 1, 6, 30, node_capacity=40.0)
    quiet = samples(60, 60.0, 20.0)

    cooling = decide(policy, quiet, nodes=5, now=NOW, last_scaled=NOW - 29)
    assert (cooling.action, cooling.nodes) == ("hold", 5)
    assert "cooling down" in cooling.reason

    decision = decide(policy, quiet, nodes=5, now=NOW, last_scaled=NOW - 31)
    assert (decision.action, decision.nodes) == (IN, 1)
    assert decision.reason == "under 150 ms (60% of the target) for 30 s"
    assert decision.figures["peak_arrival_rate"] == 20.0


def test_it_sizes_a_scale_in_for_the_peak_of_the_cooldown():
    policy = Policy(250, 1, 6, 30, node_capacity=40.0)
    quiet = samples(60, 60.0, 20.0)
    burst = [*quiet[:-3], Sample(NOW - 10, 500, 100.0, 100.0, 90.0), *quiet[-2:]]

    decision = decide(policy, burst, nodes=6, now=NOW, last_scaled=None)
    assert (decision.action, decision.nodes) == (IN, 4)  # 100 / (40 × 0.8) → 4


def test_it_holds_between_comfortably_under_and_over_the_target():
    policy = Policy(250, 1, 6, 30, node_capacity=40.0)
    for p95 in (151.0, 200.0, 250.0):
        decision = decide(policy, samples(60, p95, 20.0), nodes=3, now=NOW, last_scaled=None)
        assert (decision.action, decision.nodes) == ("hold", 3), p95


def test_without_a_measured_capacity_it_scales_in_one_node_at_a_time_and_never_below_the_minimum():
    assert decide(POLICY, samples(60, 60.0, 5.0), nodes=3, now=NOW, last_scaled=None).nodes == 2
    policy = Policy(250, 2, 6, 30, node_capacity=40.0)
    assert decide(policy, samples(60, 60.0, 5.0), nodes=3, now=NOW, last_scaled=None).nodes == 2
    assert decide(policy, samples(60, 60.0, 5.0), nodes=2, now=NOW, last_scaled=None).action == "hold"


def test_an_idle_service_goes_back_to_its_minimum():
    idle = [Sample(NOW - back, 0, 0.0, 0.0, None) for back in range(55, -1, -5)]
    decision = decide(Policy(250, 1, 6, 30, node_capacity=40.0), idle, nodes=4, now=NOW, last_scaled=None)
    assert (decision.action, decision.nodes) == (IN, 1)
    assert decision.figures["p95_ms"] is None


def test_a_count_outside_the_bounds_is_brought_back_within_them():
    below = decide(Policy(250, 2, 6, 30), [], 1, NOW, None)
    assert (below.action, below.nodes) == (OUT, 2)
    assert decide(Policy(250, 1, 3, 30), [], 5, NOW, None).nodes == 3
    assert decide(Policy(250, 1, 3, 30), [], 2, NOW, None).action == "hold"


def test_a_node_that_held_more_than_its_measured_capacity_raises_it():
    policy = Policy(250, 1, 6, 30, node_capacity=20.0)
    decision = decide(policy, samples(60, 100.0, 90.0), nodes=3, now=NOW, last_scaled=None)
    assert decision.node_capacity == 30.0 and decision.action == "hold"


def test_it_does_not_flap_under_a_steady_load_it_holds():
    """A steady 160 requests a second on five nodes of capacity 40: an hour of decisions, none."""
    policy = Policy(250, 1, 6, 30, node_capacity=40.0)
    for minute in range(60):
        now = NOW + 60 * minute
        decision = decide(policy, samples(60, 180.0, 160.0, end=now), nodes=5, now=now, last_scaled=None)
        assert decision.action == "hold", (minute, decision)
