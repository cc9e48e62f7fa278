from services import operations
from services.choices import NodeState, OperationKind, OperationState, ServiceState
from services.models import Event, Service
from tests.factories import NodeFactory
from versions.models import Instance

from .conftest import routes, serve, version


def reconcile(queue, service):
    return queue.start(lambda: operations.start(service, OperationKind.RECONCILE, None))


def test_it_boots_missing_nodes_restarts_stopped_instances_and_pushes_routes(service, proxy, fleet, cloud, queue):
    Service.objects.filter(pk=service.pk).update(backend_nodes=2)
    lost = NodeFactory(service=service)
    serve(service, "production", version(service, "v1"))
    # While the control plane was away: one node was destroyed, an instance's process exited.
    lost.instances.all().delete()
    lost.state = NodeState.DESTROYED
    lost.save()
    stopped = Instance.objects.get(node=proxy, version=version(service, "v1"))
    fleet.kill(stopped.name)
    fleet.calls.clear()

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    new = service.backend_node_list().exclude(pk=proxy.pk).get()
    assert new.state == NodeState.RUNNING and len(cloud.list_nodes()) == 1
    assert {i.version.label for i in new.instances.all()} == {"v1", "v2"}
    restarted = Instance.objects.get(pk=stopped.pk)
    assert restarted.port == fleet.instances[stopped.name]["port"] != stopped.port
    assert fleet.healthy(stopped.name)
    restart = f"restarted {stopped.name}: it was not running"
    assert Event.objects.filter(service=service, message__startswith=restart).exists()
    pushed = fleet.calls_to("put_proxy")[-1][2]["routing"]["backends"][str(version(service, "v1").pk)]
    assert {s["name"]: s["port"] for s in pushed}[stopped.name] == restarted.port
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Service.objects.get(pk=service.pk).state == ServiceState.RUNNING


def test_it_changes_nothing_when_run_twice(service, proxy, fleet, cloud, queue):
    reconcile(queue, service)
    ports = {name: instance["port"] for name, instance in fleet.instances.items()}

    operation = reconcile(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert cloud.list_nodes() == []
    assert {name: instance["port"] for name, instance in fleet.instances.items()} == ports
    assert not Event.objects.filter(service=service, action="instance.start", message__startswith="restarted").exists()
