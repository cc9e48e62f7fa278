import copy
import re
import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from routing.table import push, running_proxies
from services import agent, operations
from services.choices import OperationKind, OperationState, Outcome
from services.errors import NotFound, OperationFailed
from services.models import Event, Operation, Service
from tests.factories import NodeFactory, OperationFactory, ServiceFactory
from versions.models import Environment, Instance
from workflows.swap import SwapRefused, swap

from .conftest import env_version, routes, version


def test_it_swaps_production_and_development_both_ways(service, proxy, fleet):
    answer = swap(service, "development", service.owner)

    assert answer == {"production": version(service, "v2").pk, "development": version(service, "v1").pk}
    assert (env_version(service, "production"), env_version(service, "development")) == ("v2", "v1")
    assert routes(fleet, proxy) == {"production": "v2", "development": "v1"}
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] == str(version(service, "v2").pk)
    swapped = Event.objects.filter(service=service, action="swap", outcome=Outcome.SUCCEEDED)
    assert swapped.filter(message__startswith="swapped: production now serves v2").exists()

    swap(service, "development", service.owner)  # swapping again is the rollback

    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_refuses_an_unhealthy_version_and_changes_nothing(service, proxy, fleet):
    fleet.make_unhealthy(f"{proxy.name}-v{version(service, 'v2').pk}")

    with pytest.raises(SwapRefused, match="v2 in development is not healthy"):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Event.objects.filter(service=service, action="swap", message__startswith="swap refused").exists()
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_refuses_a_swap_with_an_environment_without_a_version(service, fleet):
    service.environments.filter(name="development").update(version=None)
    fleet.calls.clear()

    with pytest.raises(SwapRefused, match="development has no version"):
        swap(service, "development", service.owner)

    assert env_version(service, "production") == "v1"
    assert fleet.calls_to("put_proxy") == []


def test_a_data_service_has_nothing_to_swap(alice, fleet):
    database = ServiceFactory(owner=alice, name="shopdb", runtime="postgresql")

    with pytest.raises(SwapRefused, match="^shopdb is a postgresql service: it has no code versions to swap$"):
        swap(database, "development", alice)

    assert fleet.calls_to("put_proxy") == []
    assert Event.objects.get(service=database, action="swap").outcome == Outcome.FAILED


def test_it_restores_the_database_and_the_routes_when_a_router_fails(service, proxy, fleet):
    fleet.refuse(proxy, status=502)  # the gated change fails for another reason than health

    with pytest.raises(OperationFailed, match=f"the router on {proxy.name} did not take the new routes"):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    last = fleet.calls_to("put_proxy")[-1][2]
    assert last["require_healthy"] is None  # pushed again, as the database says
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Event.objects.filter(
        service=service, action="swap", outcome=Outcome.FAILED, message__startswith="swap failed"
    ).exists()
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_records_when_the_routes_cannot_be_restored(service, proxy, fleet):
    fleet.unreachable.add(proxy.name)

    with pytest.raises(OperationFailed):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert Event.objects.filter(
        service=service, action="swap", message__startswith="could not restore the routes after a failed swap"
    ).exists()


# Every refusal and restore path: a clear message, the rows and the routers as they were, and
# the history saying so.


def unchanged(service, fleet, *proxies) -> None:
    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    for proxy in proxies:
        assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Service.objects.get(pk=service.pk).locked_by is None


def swap_events(service) -> list[tuple[str, str]]:
    return list(Event.objects.filter(service=service, action="swap").values_list("outcome", "message"))


def second_router(service, fleet):
    """Another running router of the service, routing what the first does; returns both, in the
    order the swap pushes to them."""
    NodeFactory(service=service, is_proxy=True, is_backend=False)
    push(service)
    return running_proxies(service)


def test_a_router_refusing_the_incoming_release_names_the_unhealthy_instance(service, proxy, fleet):
    sick = Instance.objects.get(version=version(service, "v2")).name
    fleet.make_unhealthy(sick)
    fleet.calls.clear()

    with pytest.raises(SwapRefused) as refused:
        swap(service, "development", service.owner)

    message = f"v2 in development is not healthy on {proxy.name}: {sick} is DOWN (L7STS, HTTP 500)"
    assert str(refused.value) == message
    unchanged(service, fleet, proxy)
    # The health-gated push is the check: one request per router, then the routes pushed back.
    assert [call[2]["require_healthy"] for call in fleet.calls_to("put_proxy")] == [
        str(version(service, "v2").pk),
        None,
    ]
    assert fleet.calls_to("get_proxy") == []
    assert swap_events(service) == [(Outcome.FAILED, f"swap refused: {message}")]


def test_when_one_router_refuses_the_other_is_restored(service, fleet):
    first, second = second_router(service, fleet)
    fleet.refuse(second)  # 409: the incoming release is not healthy there

    with pytest.raises(SwapRefused, match=f"v2 in development is not healthy on {second.name}: the router refused"):
        swap(service, "development", service.owner)

    unchanged(service, fleet, first, second)
    gates = [(node, call["require_healthy"]) for node, _, call in fleet.calls_to("put_proxy")[-4:]]
    v2 = str(version(service, "v2").pk)
    assert gates == [(first.name, v2), (second.name, v2), (first.name, None), (second.name, None)]
    assert swap_events(service)[0][1].startswith("swap refused: v2 in development is not healthy")


def test_a_failed_restore_is_recorded_beside_the_refusal(service, fleet, monkeypatch):
    first, second = second_router(service, fleet)
    fleet.refuse(second)
    flipped = fleet.client

    def client(node, timeout=30.0):
        agent = flipped(node, timeout)
        if node.name == first.name and any(call[2]["require_healthy"] for call in fleet.calls_to("put_proxy")):
            fleet.unreachable.add(first.name)  # it took the flip, then went away
        return agent

    monkeypatch.setattr(agent, "client_for", client)

    with pytest.raises(SwapRefused, match="v2 in development is not healthy"):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert routes(fleet, second) == {"production": "v1", "development": "v2"}
    assert routes(fleet, first) == {"production": "v2", "development": "v1"}, "it never got the routes back"
    outcomes, messages = zip(*swap_events(service)[::-1], strict=True)
    assert outcomes == (Outcome.FAILED, Outcome.FAILED)
    assert messages[0] == (
        f"could not restore the routes after a failed swap: the router on {first.name} did not take the new"
        f" routes: node {first.name} did not answer: connection refused"
    )
    assert messages[1].startswith("swap refused: v2 in development is not healthy")
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_an_unknown_environment_is_not_found_and_nothing_is_written(service, proxy, fleet):
    fleet.calls.clear()
    operations_before = Operation.objects.count()

    with pytest.raises(NotFound) as not_found:
        swap(service, "staging", service.owner)

    assert (
        str(not_found.value) == f"{service.name} has no environment named 'staging' (it has: production, development)"
    )

    unchanged(service, fleet, proxy)
    assert fleet.calls == []
    # As before: a request for nothing is answered, not recorded.
    assert Operation.objects.count() == operations_before and swap_events(service) == []


def test_swapping_production_with_itself_is_refused(service, proxy, fleet):
    with pytest.raises(SwapRefused, match="choose an environment other than production to swap with"):
        swap(service, "production", service.owner)

    unchanged(service, fleet, proxy)
    assert swap_events(service) == [
        (Outcome.FAILED, "swap refused: choose an environment other than production to swap with")
    ]


@pytest.mark.parametrize(
    ("empty", "message"),
    [
        ("development", "development has no version to swap in; deploy one first"),
        ("production", "production has no version yet; deploy one to production first"),
    ],
)
def test_an_environment_without_a_version_is_refused(service, proxy, fleet, empty, message):
    Environment.objects.filter(service=service, name=empty).update(version=None)
    push(service)
    before = copy.deepcopy(fleet.routing[proxy.name])
    fleet.calls.clear()

    with pytest.raises(SwapRefused) as refused:
        swap(service, "development", service.owner)

    assert str(refused.value) == message
    assert fleet.calls == [] and fleet.routing[proxy.name] == before
    assert Environment.objects.get(service=service, name=empty).version is None
    assert swap_events(service) == [(Outcome.FAILED, f"swap refused: {message}")]
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_a_release_missing_on_a_backend_node_is_refused_before_any_router_is_asked(service, proxy, fleet):
    # The routers gate on the servers they are given; only the rows know a node lacks one.
    NodeFactory(service=service)
    fleet.calls.clear()

    with pytest.raises(SwapRefused) as refused:
        swap(service, "development", service.owner)

    message = "v2 in development is not healthy: v2 runs on 1 of 2 backend node(s)"
    assert str(refused.value) == message
    assert fleet.calls == []
    unchanged(service, fleet, proxy)
    assert swap_events(service) == [(Outcome.FAILED, f"swap refused: {message}")]


def test_a_busy_service_is_refused_and_nothing_is_written(service, proxy, fleet):
    holder = OperationFactory(service=service, kind=OperationKind.SCALE)
    assert operations.claim(holder)
    fleet.calls.clear()
    operations_before, events_before = Operation.objects.count(), Event.objects.count()

    with pytest.raises(operations.ServiceBusy) as busy:
        swap(service, "development", service.owner)

    assert str(busy.value) == (f"the service is busy with scale operation #{holder.pk}; try again when it has finished")
    assert fleet.calls == []
    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert (Operation.objects.count(), Event.objects.count()) == (operations_before, events_before)
    assert Service.objects.get(pk=service.pk).locked_by_id == holder.pk


# What a swap costs: one request per router, no thread, the fewest writes that keep its history.


def transactions(queries) -> list[list[tuple[str, str]]]:
    """The writes among `queries`, by transaction (the test's own is outside: each atomic block is
    a savepoint in it; a write outside one is a transaction of its own)."""
    grouped, current = [], None
    for sql in (query["sql"] for query in queries.captured_queries):
        if sql.startswith("SAVEPOINT"):
            current = []
            grouped.append(current)
        elif sql.startswith("RELEASE SAVEPOINT"):
            current = None
        elif sql.startswith(("INSERT", "UPDATE", "DELETE")):
            write = (sql.split()[0], re.search(r'(?:INTO|UPDATE|FROM) "(\w+)"', sql).group(1))
            if current is None:
                grouped.append([write])
            else:
                current.append(write)
    return [writes for writes in grouped if writes]


def test_a_swap_writes_its_operation_and_one_event_in_three_transactions(service, proxy, fleet):
    fleet.calls.clear()

    with CaptureQueriesContext(connection) as queries:
        swap(service, "development", service.owner)

    assert transactions(queries) == [
        # born running, with the service taken
        [("INSERT", "services_operation"), ("UPDATE", "services_service")],
        # the flip
        [("UPDATE", "versions_environment"), ("UPDATE", "versions_environment")],
        # the end, the service released and the swap's Event
        [("UPDATE", "services_operation"), ("UPDATE", "services_service"), ("INSERT", "services_event")],
    ]
    assert [call[1] for call in fleet.calls] == ["put_proxy"]
    operation = Operation.objects.get(kind=OperationKind.SWAP)
    assert operation.state == OperationState.SUCCEEDED and operation.lease_expires > operation.finished
    (event,) = Event.objects.filter(operation=operation)
    assert (event.action, event.outcome, event.actor) == ("swap", Outcome.SUCCEEDED, service.owner)
    assert event.message == "swapped: production now serves v2, development serves v1"


def test_a_swap_starts_no_thread(service, proxy, fleet, monkeypatch):
    swap(service, "development", service.owner)  # this process's lease keeper runs from now on
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread.name))

    swap(service, "development", service.owner)
    swap(service, "development", service.owner)

    assert started == []
    assert routes(fleet, proxy) == {"production": "v2", "development": "v1"}
