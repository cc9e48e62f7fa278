"""Data services' workflows against the fake agent: one node running the server, the password
sent to the agent and kept out of every event, no router, no healing."""

from services import operations
from services.choices import NodeState, OperationKind, OperationState, ServiceState
from services.models import Event, Operation, Service
from workflows import healing, lifecycle


def create(alice, queue, runtime="postgresql"):
    made = {}

    def request():
        made["service"], operation = lifecycle.create(alice, "wikidb", runtime)
        return operation

    operation = queue.start(request)
    made["service"].refresh_from_db()
    return made["service"], operation


def test_it_runs_the_server_on_one_node_without_a_router(alice, fleet, queue):
    service, operation = create(alice, queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert service.state == ServiceState.RUNNING
    node = service.live_nodes().get()
    assert node.roles == ["backend"] and node.data_port
    assert len(service.password) >= 32
    assert fleet.instances["server"]["version"] == "postgresql"
    assert service.url == f"postgres://conpaas@{node.address}:{node.data_port}/conpaas"
    assert list(service.environments.values_list("name", flat=True)) == ["production"], "no code: no preview"
    assert service.connection_url() == f"postgres://conpaas:{service.password}@{node.address}:{node.data_port}/conpaas"
    assert not Event.objects.filter(message__contains=service.password).exists()
    assert service.password not in str(list(Operation.objects.values_list("params", "progress", "error")))


def test_a_redis_url_carries_the_password_as_redis_clients_read_it(alice, queue):
    service, _ = create(alice, queue, "redis")
    node = service.live_nodes().get()
    assert service.connection_url() == f"redis://:{service.password}@{node.address}:{node.data_port}/0"
    assert service.url == f"redis://{node.address}:{node.data_port}/0"


def test_self_healing_leaves_a_data_service_alone(alice, queue):
    service, _ = create(alice, queue)
    assert healing.check_due(max_age=0) == 0
    assert not Operation.objects.filter(service=service, kind="heal").exists()


def reconcile(queue, service):
    return queue.start(lambda: operations.start(service, OperationKind.RECONCILE, None))


def test_a_reconcile_keeps_a_data_service_on_its_one_node_without_a_router(alice, fleet, cloud, queue):
    service, _ = create(alice, queue)
    node = service.live_nodes().get()
    fleet.calls.clear()

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert list(service.live_nodes()) == [node] and len(cloud.list_nodes()) == 1, "no node booted, no router"
    assert not fleet.calls_to("put_proxy")
    assert fleet.instances["server"]["version"] == "postgresql"
    service.refresh_from_db()
    assert service.url.startswith(f"postgres://conpaas@{node.address}:")
    ended = Event.objects.get(operation=operation, action="reconcile", outcome="succeeded")
    assert ended.message == f"reconciled: the postgresql server runs on {node.name}"


def test_a_reconcile_after_down_boots_the_servers_node_again_and_no_router(alice, fleet, cloud, queue):
    service, _ = create(alice, queue, "redis")
    gone = service.live_nodes().get()
    gone.state = NodeState.DESTROYED  # what 'manage.py down' leaves
    gone.save()

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    node = service.live_nodes().get()
    assert node != gone and node.roles == ["backend"] and node.data_port
    assert service.proxy_nodes().count() == 0
    assert Service.objects.get(pk=service.pk).url == f"redis://{node.address}:{node.data_port}/0"
