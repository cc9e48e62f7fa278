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


def test_it_runs_the_server_on_a_node_behind_its_router(alice, fleet, queue):
    service, operation = create(alice, queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert service.state == ServiceState.RUNNING
    router, node = service.router_node(), service.server_node()
    assert node.roles == ["backend"] and node.data_port and router.roles == ["proxy"]
    assert len(service.password) >= 32
    server = fleet.on_node[(node.name, "server")]
    assert server["version"] == "postgresql"
    # A Patroni member, agreeing with any later standby through the etcd on the router node.
    dcs = fleet.on_node[(router.name, "dcs")]
    assert server["spec"]["cluster"]["dcs"] == {"host": router.address, "port": dcs["port"]}
    assert service.url == f"postgres://conpaas@{router.address}:{router.data_port}/conpaas"
    assert list(service.environments.values_list("name", flat=True)) == ["production"], "no code: no preview"
    assert (
        service.connection_url() == f"postgres://conpaas:{service.password}@{router.address}:{router.data_port}/conpaas"
    )
    assert not Event.objects.filter(message__contains=service.password).exists()
    assert service.password not in str(list(Operation.objects.values_list("params", "progress", "error")))


def test_a_redis_url_names_its_router_and_carries_the_password_as_redis_clients_read_it(alice, queue):
    service, _ = create(alice, queue, "redis")
    router = service.router_node()
    [server] = service.live_nodes().filter(is_backend=True)
    assert router.roles == ["proxy"] and router != server and router.address != server.address
    assert service.connection_url() == f"redis://:{service.password}@{router.address}:{router.data_port}/0"
    assert service.url == f"redis://{router.address}:{router.data_port}/0"
    replica_port = router.data_details["replica_port"]
    assert service.replica_url() == f"redis://:{service.password}@{router.address}:{replica_port}/0"


def test_self_healing_leaves_a_data_service_alone(alice, queue):
    service, _ = create(alice, queue)
    assert healing.check_due(max_age=0) == 0
    assert not Operation.objects.filter(service=service, kind="heal").exists()


def reconcile(queue, service):
    return queue.start(lambda: operations.start(service, OperationKind.RECONCILE, None))


def test_a_reconcile_keeps_a_data_service_on_its_nodes(alice, fleet, cloud, queue):
    service, _ = create(alice, queue)
    nodes = list(service.live_nodes())
    fleet.calls.clear()

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert list(service.live_nodes()) == nodes and len(cloud.list_nodes()) == 2, "no node booted"
    assert not fleet.calls_to("put_proxy")
    service.refresh_from_db()
    assert service.url.startswith(f"postgres://conpaas@{service.router_node().address}:")
    ended = Event.objects.get(operation=operation, action="reconcile", outcome="succeeded")
    assert ended.message == f"reconciled: the postgresql server runs on {service.server_node().name}"


def test_a_reconcile_after_down_boots_the_router_and_the_server_again_at_the_same_url(alice, fleet, cloud, queue):
    service, _ = create(alice, queue, "redis")
    url = service.url
    gone = list(service.live_nodes())
    service.live_nodes().update(state=NodeState.DESTROYED)  # what 'manage.py down' leaves

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    router, server = service.router_node(), service.server_node()
    assert router not in gone and server not in gone and server.data_port
    assert [n.roles for n in service.live_nodes()] == [["proxy"], ["backend"]]
    assert Service.objects.get(pk=service.pk).url == f"redis://{router.address}:{router.data_port}/0"
    assert url.startswith("redis://")
