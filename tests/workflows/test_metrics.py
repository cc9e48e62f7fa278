"""Merging the routers' figures into a service's metrics (routing.metrics.service_metrics)."""

from routing.metrics import service_metrics
from routing.table import push
from services.choices import NodeState
from tests.factories import NodeFactory


def figures(requests, p50, p95, error_rate=0.0):
    return {"requests": requests, "request_rate": requests / 60, "p50_ms": p50, "p95_ms": p95, "error_rate": error_rate}


def test_it_leaves_a_percentile_null_while_no_request_was_sampled(fleet, service):
    # Routers log one request in a few: a quiet environment has counts and no percentile yet.
    proxy = service.proxy_nodes().get()
    fleet.figures[proxy.name] = {"production": figures(5, None, None)}

    production = service_metrics(service)["environments"]["production"]

    assert production["requests"] == 5
    assert production["p50_ms"] is None and production["p95_ms"] is None
    assert production["error_rate"] == 0.0


def test_it_weights_each_routers_figures_by_its_requests_over_the_routers_that_have_them(fleet, service):
    first = service.proxy_nodes().get()
    second = NodeFactory(service=service, is_proxy=True, is_backend=False, state=NodeState.RUNNING)
    push(service)
    fleet.figures[first.name] = {"production": figures(10, 20.0, 40.0, error_rate=0.1)}
    fleet.figures[second.name] = {"production": figures(30, None, None, error_rate=0.0)}

    production = service_metrics(service)["environments"]["production"]

    assert production["requests"] == 40
    assert (production["p50_ms"], production["p95_ms"]) == (20.0, 40.0)  # only the first router sampled any
    assert production["error_rate"] == 0.025  # (10 × 0.1 + 30 × 0) / 40


def test_it_adds_up_the_queue_timeouts_of_every_router(fleet, service):
    first = service.proxy_nodes().get()
    second = NodeFactory(service=service, is_proxy=True, is_backend=False, state=NodeState.RUNNING)
    push(service)
    fleet.figures[first.name] = {"production": {**figures(100, 5000.0, 5000.0, 0.3), "queue_timeouts": 30}}
    fleet.figures[second.name] = {"production": {**figures(50, 4000.0, 5000.0, 0.2), "queue_timeouts": 10}}

    environments = service_metrics(service)["environments"]

    assert environments["production"]["queue_timeouts"] == 40
    assert environments["development"]["queue_timeouts"] == 0
