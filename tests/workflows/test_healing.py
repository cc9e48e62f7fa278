"""Self-healing against the fake agent and cloud: what the check finds, and how the heal operation mends it."""

from datetime import timedelta

from django.utils import timezone

from services import operations
from services.choices import NodeState, OperationKind, OperationState
from services.models import Event, Node, Operation, Service
from tests.factories import NodeFactory
from versions.models import Instance
from workflows import healing
from workflows.scaling import request_scale

from .conftest import routes, version


def check(queue, service) -> Operation | None:
    """One check of the service, and whatever heal operation it started run to its end."""
    with queue.capture_on_commit(execute=True):
        operation = healing.check(service)
    queue.run()
    if operation is not None:
        operation.refresh_from_db()
    return operation


def backend_node(queue, service) -> Node:
    """A second, backend-only node, booted in the cloud by a scale."""
    queue.start(lambda: request_scale(service, "backend", 2, service.owner))
    return service.backend_node_list().get(is_proxy=False)


def servers(fleet, proxy) -> set[str]:
    return {server["name"] for group in fleet.routing[proxy.name]["backends"].values() for server in group}


def messages(service, action) -> list[str]:
    return list(Event.objects.filter(service=service, action=action).values_list("message", flat=True))


def test_a_dead_backend_node_leaves_the_routers_and_is_replaced(service, proxy, fleet, cloud, queue):
    dead = backend_node(queue, service)
    cloud.stop(dead.name)
    fleet.calls.clear()

    operation = check(queue, service)

    assert operation.kind == OperationKind.HEAL and operation.state == OperationState.SUCCEEDED, operation.error
    dead.refresh_from_db()
    assert dead.state == NodeState.DESTROYED
    assert dead.error == "its agent does not answer and the cloud reports it stopped"
    new = service.backend_node_list().get(is_proxy=False)
    assert new.state == NodeState.RUNNING and {i.version.label for i in new.instances.all()} == {"v1", "v2"}
    assert not any(name.startswith(dead.name) for name in servers(fleet, proxy))
    assert {f"{new.name}-v{version(service, 'v1').pk}", f"{new.name}-v{version(service, 'v2').pk}"} <= servers(
        fleet, proxy
    )
    calls = [(name, method) for name, method, _ in fleet.calls if method in ("put_proxy", "destroy_node")]
    assert calls[:2] == [(proxy.name, "put_proxy"), (dead.name, "destroy_node")], "out of the routers, then gone"
    assert f"healing: node {dead.name} is dead: its agent does not answer" in messages(service, "heal")[-1]
    summary = messages(service, "heal")[0]
    assert summary.startswith("healed in ") and f"replaced {dead.name} by {new.name}" in summary


def test_a_dead_router_node_is_replaced_at_its_address_so_the_url_stays(service, proxy, fleet, queue):
    url = service.url
    fleet.unreachable.add(proxy.name)  # and the cloud no longer has it

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    new = service.proxy_nodes().get()
    assert new != proxy and (new.address, new.http_port) == (proxy.address, proxy.http_port)
    assert service.url == url
    assert routes(fleet, new) == {"production": "v1", "development": "v2"}
    assert Node.objects.get(pk=proxy.pk).state == NodeState.DESTROYED
    assert any("so that the service keeps its URL" in message for message in messages(service, "node.boot"))


def test_a_router_whose_replacement_failed_is_replaced_at_its_address_next_time(
    service, proxy, fleet, cloud, queue, settings
):
    settings.CONPAAS_BOOT_ATTEMPTS = 1
    fleet.unreachable.add(proxy.name)
    cloud.refusing = 1

    failed = check(queue, service)

    assert failed.state == OperationState.FAILED and "InstanceLimitExceeded" in failed.error
    assert Node.objects.get(pk=proxy.pk).state == NodeState.FAILED, "kept: it remembers the address"
    assert check(queue, service) is None, "a failed heal is not tried again at once"
    Operation.objects.filter(pk=failed.pk).update(finished=timezone.now() - timedelta(seconds=healing.RETRY_FAILED))

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert "healing: 1 failed node(s) to replace" in messages(service, "heal")
    new = service.proxy_nodes().get()
    assert new.address == proxy.address
    assert f"replaced {proxy.name} by {new.name}" in messages(service, "heal")[0]


def test_a_stopped_instance_is_started_again(service, proxy, fleet, queue):
    stopped = Instance.objects.get(node=proxy, version=version(service, "v1"))
    fleet.kill(stopped.name)

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert operation.progress  # it went through its steps
    restarted = Instance.objects.get(pk=stopped.pk)
    assert restarted.port != stopped.port and fleet.healthy(stopped.name)
    assert fleet.routing[proxy.name]["backends"][str(stopped.version_id)][0]["port"] == restarted.port
    restart = f"restarted {stopped.name}: it was not running (in "
    assert any(message.startswith(restart) for message in messages(service, "instance.start"))
    assert "started 1 instance(s)" in messages(service, "heal")[0]
    assert list(service.live_nodes()) == [proxy], "a live node is not replaced"


def test_a_router_whose_haproxy_died_gets_its_routes_again(service, proxy, fleet, queue):
    fleet.routers_down.add(proxy.name)

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert f"the router on {proxy.name} is not running" in messages(service, "heal")[-1]
    assert proxy.name not in fleet.routers_down


def test_a_silent_agent_has_a_grace_while_its_cloud_says_the_node_runs(service, proxy, fleet, queue, settings):
    quiet = backend_node(queue, service)
    fleet.unreachable.add(quiet.name)

    assert check(queue, service) is None
    assert Node.objects.get(pk=quiet.pk).unreachable_since is not None
    fleet.unreachable.discard(quiet.name)
    assert check(queue, service) is None
    assert Node.objects.get(pk=quiet.pk).unreachable_since is None, "it answered again"
    fleet.unreachable.add(quiet.name)
    check(queue, service)
    Node.objects.filter(pk=quiet.pk).update(
        unreachable_since=timezone.now() - timedelta(seconds=settings.CONPAAS_HEAL_GRACE)
    )

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert Node.objects.get(pk=quiet.pk).error.startswith("its agent has not answered for 60 s")


def test_a_node_left_booting_by_an_operation_that_ended_is_replaced(service, proxy, fleet, cloud, queue):
    Service.objects.filter(pk=service.pk).update(backend_nodes=2)
    orphan = NodeFactory(service=service, state=NodeState.BOOTING)

    operation = check(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert Node.objects.get(pk=orphan.pk).state == NodeState.DESTROYED
    assert service.backend_node_list().filter(state=NodeState.RUNNING).count() == 2


def test_nothing_is_started_when_every_node_is_well(service, proxy, fleet, queue):
    assert check(queue, service) is None
    assert not Operation.objects.filter(kind=OperationKind.HEAL).exists()


def test_healing_waits_for_the_operation_that_holds_the_service(service, proxy, fleet, queue):
    stopped = Instance.objects.get(node=proxy, version=version(service, "v1"))
    fleet.kill(stopped.name)
    with queue.capture_on_commit(execute=True):
        with operations.holding(service, OperationKind.SWAP, service.owner):
            assert healing.check_due(max_age=0) == 0, "a held service is looked at next time"
            assert healing.check(service) is None
            # A heal started just before the swap took the service waits for it.
            operation = operations.start(service, OperationKind.HEAL, None)
            queue.run()
            operation.refresh_from_db()
            assert operation.state == OperationState.PENDING and not fleet.healthy(stopped.name)
    queue.run()  # the swap's end started it

    operation.refresh_from_db()
    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert fleet.healthy(stopped.name)


def test_each_service_is_checked_once_per_interval(service, proxy, fleet, queue):
    fleet.calls.clear()
    with queue.capture_on_commit(execute=True):
        assert healing.check_due(max_age=60) == 0
        assert healing.check_due(max_age=60) == 0

    assert [method for _, method, _ in fleet.calls] == ["status"]
