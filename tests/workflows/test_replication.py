"""Replicated Redis against the fake agent: a router node in front of the servers from the start,
replicas and sentinels added by a scale, a failover noticed, dead members and a dead router
replaced with the service's address kept (workflows/replication.py)."""

import pytest

from services import replication
from services.choices import NodeState, OperationState
from services.errors import Conflict
from services.models import Event, Node
from tests.api.conftest import client_for
from tests.factories import ServiceFactory
from tests.workflows.test_backups import create, heal_due
from versions.instances import link_environment
from workflows import backups, scaling


def scale(queue, service, nodes):
    operation = queue.start(lambda: scaling.request_scale(service, "backend", nodes, service.owner))
    service.refresh_from_db()
    return operation


def result(operation) -> str:
    """What the operation's last event says: its result."""
    return Event.objects.filter(operation=operation).order_by("-id").first().message


def servers(service):
    return list(service.live_nodes().filter(is_backend=True).order_by("created", "id"))


def members(fleet, service):
    router = service.router_node()
    return sorted(m["name"] for m in fleet.on_node[(router.name, "router")]["spec"]["members"])


@pytest.fixture
def cache(alice, queue):
    return create(alice, queue, runtime="redis", name="cache")


def test_a_new_redis_service_is_one_server_behind_its_router_without_sentinels(cache, fleet):
    router, [server] = cache.router_node(), servers(cache)
    assert members(fleet, cache) == [server.name]
    assert fleet.on_node[(router.name, "router")]["spec"]["engine"] == "redis"
    assert not [key for key in fleet.on_node if key[1] == "sentinel"]
    assert cache.url == f"redis://{router.address}:{router.data_port}/0"


def test_scaling_to_three_starts_two_replicas_of_the_primary_and_four_sentinels(cache, fleet, queue):
    url, [primary] = cache.url, servers(cache)

    operation = scale(queue, cache, 3)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert "2 replica(s) in sync" in result(operation)
    first, *replicas = servers(cache)
    assert first == primary and len(replicas) == 2
    for node in replicas:
        assert fleet.on_node[(node.name, "server")]["replica_of"] == {
            "host": primary.address,
            "port": primary.data_port,
        }
    sentinels = [key for key in fleet.on_node if key[1] == "sentinel"]
    assert len(sentinels) == 4  # the three servers and the router: a majority survives any one
    assert {fleet.on_node[key]["spec"]["quorum"] for key in sentinels} == {3}
    assert members(fleet, cache) == sorted(node.name for node in servers(cache))
    assert cache.url == url
    roles = {node.name: node.replication.get("role") for node in servers(cache)}
    assert roles == {primary.name: "primary", replicas[0].name: "replica", replicas[1].name: "replica"}


def test_a_failover_is_noticed_and_recorded_with_the_service_keeping_its_address(cache, fleet, queue):
    scale(queue, cache, 2)
    old, new = servers(cache)
    fleet.promote(new)

    assert replication.refresh(cache) == new

    assert cache.server_node() == new
    said = Event.objects.get(service=cache, action="failover").message
    assert f"{new.name} is the primary now, in place of {old.name}" in said and "address is unchanged" in said
    assert Node.objects.get(pk=old.pk).replication["role"] == "replica"  # Sentinel turned it into one
    replication.refresh(cache)
    assert Event.objects.filter(service=cache, action="failover").count() == 1, "one failover, one event"


def test_a_dead_primarys_node_is_replaced_by_a_replica_of_the_new_primary(cache, fleet, cloud, queue):
    scale(queue, cache, 3)
    url = cache.url
    dead, survivor, other = servers(cache)
    cloud.stop(dead.name)
    fleet.promote(survivor)  # what the sentinels do within seconds

    [operation] = heal_due(queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    now = servers(cache)
    assert dead not in now and len(now) == 3 and cache.url == url
    [new] = [node for node in now if node not in (survivor, other)]
    assert fleet.on_node[(new.name, "server")]["replica_of"] == {"host": survivor.address, "port": survivor.data_port}
    assert members(fleet, cache) == sorted(node.name for node in now)
    assert Event.objects.filter(service=cache, action="failover").exists()
    assert f"replaced {dead.name}" in result(operation)


def test_a_dead_router_is_replaced_at_its_address_and_port(cache, fleet, cloud, queue):
    scale(queue, cache, 2)
    router, url = cache.router_node(), cache.url
    cloud.stop(router.name)

    [operation] = heal_due(queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    new = cache.router_node()
    assert new != router and (new.address, new.data_port) == (router.address, router.data_port)
    assert cache.url == url and members(fleet, cache) == sorted(node.name for node in servers(cache))


def test_scaling_down_removes_replicas_never_the_primary_and_stops_the_sentinels(cache, fleet, queue):
    scale(queue, cache, 3)
    first, second, third = servers(cache)
    fleet.promote(third)
    replication.refresh(cache)

    operation = scale(queue, cache, 1)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert servers(cache) == [third]
    assert members(fleet, cache) == [third.name]
    live = {node.name for node in cache.live_nodes()}
    assert not [key for key in fleet.on_node if key[1] == "sentinel" and key[0] in live]


def test_a_linked_service_gets_the_replicas_url_too(cache, alice):
    web = ServiceFactory(owner=alice, name="web")
    web.links.create(target=cache)
    env = link_environment(web)
    router = cache.router_node()
    assert env["REDIS_URL"] == cache.connection_url()
    assert (
        env["REDIS_REPLICA_URL"]
        == f"redis://:{cache.password}@{router.address}:{router.data_details['replica_port']}/0"
    )


def test_a_restore_in_place_waits_for_one_server(cache, queue, fleet):
    scale(queue, cache, 2)
    with pytest.raises(Conflict, match="scale it to 1 before restoring in place"):
        backups.request_restore(cache, cache.owner, backup_pk=1)


def test_the_nodes_say_their_role_and_lag(cache, queue):
    scale(queue, cache, 2)
    answer = client_for(cache.owner).get(f"/api/v1/services/{cache.pk}/nodes/").json()
    by_role = {node["replication_role"]: node for node in answer}
    assert set(by_role) == {None, "primary", "replica"}  # the router has none
    assert by_role["replica"]["lag_s"] == 0 and by_role[None]["roles"] == ["proxy"]
    assert all(node["state"] == NodeState.RUNNING for node in answer)


def test_a_silent_primary_keeps_its_role_until_its_failover_is_told(cache, fleet, queue):
    scale(queue, cache, 2)
    old, new = servers(cache)
    fleet.unreachable.add(old.name)

    replication.refresh(cache)  # the timer's pass, before Sentinel has promoted the replica

    assert Node.objects.get(pk=old.pk).replication["role"] == "primary"
    fleet.promote(new)
    replication.refresh(cache)
    replication.refresh(cache)
    assert Event.objects.filter(service=cache, action="failover").count() == 1
    assert Node.objects.get(pk=old.pk).replication["role"] == "old-primary"


def test_the_owners_credentials_name_the_replicas_url_too(cache, queue):
    from services.data_servers import credentials

    said = credentials(cache, cache.owner)
    router = cache.router_node()
    assert said["url"] == cache.connection_url() and (said["host"], said["port"]) == (router.address, router.data_port)
    assert said["replica_url"] == cache.replica_url()
