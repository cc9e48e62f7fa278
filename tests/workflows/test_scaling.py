import pytest

from services.choices import NodeState, OperationState
from services.errors import QuotaExceeded
from services.models import Node, Operation
from workflows.scaling import request_scale

from .conftest import routes


def scale(queue, service, nodes):
    return queue.start(lambda: request_scale(service, "backend", nodes, service.owner))


def servers(fleet, proxy) -> set[str]:
    backends = fleet.routing[proxy.name]["backends"]
    return {server["name"] for servers in backends.values() for server in servers}


def test_it_boots_backend_nodes_running_every_version_in_use(service, proxy, fleet, cloud, queue):
    operation = scale(queue, service, 3)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    booted = list(service.nodes.exclude(pk=proxy.pk))
    assert len(booted) == 2 and len(cloud.list_nodes()) == 2
    assert {node.state for node in booted} == {NodeState.RUNNING}
    assert not any(node.is_proxy for node in booted)
    for node in booted:
        assert {i.version.label for i in node.instances.all()} == {"v1", "v2"}
        assert {f"{node.name}-v{i.version_id}" for i in node.instances.all()} <= servers(fleet, proxy)
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}


def test_it_drains_and_destroys_backend_nodes_and_keeps_the_proxy_node(service, proxy, fleet, cloud, queue):
    scale(queue, service, 3)
    booted = list(service.nodes.exclude(pk=proxy.pk))
    fleet.calls.clear()

    operation = scale(queue, service, 1)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert cloud.list_nodes() == []
    assert list(service.live_nodes()) == [proxy]
    assert Node.objects.filter(service=service, state=NodeState.DESTROYED).count() == 2
    assert servers(fleet, proxy) == {f"{proxy.name}-v{i.version_id}" for i in proxy.instances.all()}
    # newest first, each drained from the router before its node is destroyed
    assert [(name, method) for name, method, _ in fleet.calls] == [
        (proxy.name, "put_proxy"),
        (booted[1].name, "destroy_node"),
        (proxy.name, "put_proxy"),
        (booted[0].name, "destroy_node"),
        (proxy.name, "get_proxy"),  # the health the console shows, saved before the operation ends
    ]
    first_drain = fleet.calls[0][2]["routing"]["backends"]
    assert not any(s["name"].startswith(booted[1].name) for servers in first_drain.values() for s in servers)
    assert any(s["name"].startswith(booted[0].name) for servers in first_drain.values() for s in servers)


def test_it_never_removes_the_node_that_runs_the_router(service, proxy, queue):
    operation = scale(queue, service, 0)

    assert operation.state == OperationState.FAILED
    assert "the last backend node also runs the router" in operation.error
    assert list(service.live_nodes()) == [proxy]


def test_a_scale_past_the_nodes_quota_is_refused_before_anything_is_recorded(service, proxy, settings):
    settings.CONPAAS_QUOTA_NODES = 2
    with pytest.raises(QuotaExceeded, match=r"^quota exceeded: nodes \(2\)") as refused:
        request_scale(service, "backend", 3, service.owner)
    assert refused.value.http_status == 403
    service.refresh_from_db()
    assert service.backend_nodes == 1 and not Operation.objects.filter(kind="scale").exists()
