"""mysql services against the fake agent: one server behind its router from the start, a Galera
cluster from three servers (two refused), writes moving to another member when one dies, a
cluster stopped whole started again from its most advanced member, members leaving cleanly on a
scale down, and backups as SQL dumps (workflows/replication.py, workflows/backups.py)."""

import pytest

from services import data_probes, replication
from services.choices import BackupKind, BackupState, OperationState
from services.data_servers import credentials
from services.errors import Conflict
from services.models import Event, Node
from tests.workflows.test_backups import create, heal_due, store  # noqa: F401 (the backup store fixture)
from tests.workflows.test_replication import members, result, scale, servers
from workflows import backups


@pytest.fixture
def shopdb(alice, queue):
    return create(alice, queue, runtime="mysql", name="shopdb")


def galera(fleet, node):
    return fleet.on_node[(node.name, "server")]["spec"]


def test_a_new_mysql_service_is_one_galera_member_behind_its_router(shopdb, fleet, alice):
    router, [server] = shopdb.router_node(), servers(shopdb)
    spec = galera(fleet, server)
    assert spec["galera"] == {"cluster": f"conpaas-{shopdb.pk}", "member": server.name}
    assert spec["peers"] == [] and spec["bootstrap"] is False  # the first member starts the cluster
    assert fleet.on_node[(router.name, "router")]["spec"]["engine"] == "mysql"
    assert members(fleet, shopdb) == [server.name]
    [checked] = fleet.on_node[(router.name, "router")]["spec"]["members"]
    assert checked["check_port"] == server.data_details["check_port"]  # its galera_check
    assert shopdb.url == f"mysql://conpaas@{router.address}:{router.data_port}/conpaas"
    said = credentials(shopdb, alice)
    assert said["url"] == f"mysql://conpaas:{shopdb.password}@{router.address}:{router.data_port}/conpaas"
    assert (said["host"], said["port"], said["user"], said["database"]) == (
        router.address,
        router.data_port,
        "conpaas",
        "conpaas",
    )
    assert said["replica_url"].startswith("mysql://conpaas:")
    assert server.replication["role"] == "synced"


def test_two_servers_are_refused_and_three_make_a_cluster_whose_members_join_the_first(shopdb, fleet, queue):
    with pytest.raises(Conflict, match="1 server or a Galera cluster of 3 to 5, not 2: a cluster of 2 loses"):
        scale(queue, shopdb, 2)
    shopdb.refresh_from_db()
    assert shopdb.backend_nodes == 1

    operation = scale(queue, shopdb, 3)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    first, *joined = servers(shopdb)
    for node in joined:
        peers = galera(fleet, node)["peers"]
        assert {"host": first.address, "port": first.data_details["galera_port"]} in peers
    assert members(fleet, shopdb) == sorted(node.name for node in servers(shopdb))
    assert {node.replication["role"] for node in servers(shopdb)} == {"synced"}
    assert "takes the writes, 2 other member(s) synced" in result(operation)
    joins = Event.objects.filter(service=shopdb, action="galera.join").values_list("message", flat=True)
    assert sorted(m.split()[0] for m in joins) == sorted(node.name for node in joined)


def test_writes_moving_to_another_member_are_told_and_lose_nothing(shopdb, fleet, queue):
    scale(queue, shopdb, 3)
    writer = replication.refresh(shopdb)
    fleet.on_node[(writer.name, "server")]["state"] = "exited"

    now = replication.refresh(shopdb)

    assert now != writer and now.replication["role"] == "synced"
    event = Event.objects.filter(service=shopdb, action="failover").get()
    assert f"writes go to {now.name} now, in place of {writer.name} (it is not synced)" in event.message
    assert "none is lost" in event.message


def test_writes_moving_while_the_member_before_still_serves_are_no_failover(shopdb, fleet, queue):
    scale(queue, shopdb, 3)
    writer = replication.refresh(shopdb)
    router = shopdb.router_node()
    other = next(node for node in servers(shopdb) if node != writer)
    Node.objects.filter(pk=router.pk).update(replication={**router.replication, "writer": other.name})

    assert replication.refresh(shopdb) == writer  # the router's checks came up in another order

    assert not Event.objects.filter(service=shopdb, action="failover").exists()
    router.refresh_from_db()
    assert router.replication["writer"] == writer.name


def test_six_servers_are_refused_saying_what_a_mysql_service_runs(shopdb, queue):
    with pytest.raises(Conflict, match="^a mysql service runs 1 server or a Galera cluster of 3 to 5, not 6$"):
        scale(queue, shopdb, 6)


def test_a_cluster_stopped_whole_starts_again_from_its_most_advanced_member(shopdb, fleet, queue):
    scale(queue, shopdb, 3)
    first, second, third = servers(shopdb)
    fleet.seqno = {first.name: 41, second.name: 57, third.name: 57}  # ties go to the oldest
    for node in (first, second, third):
        fleet.on_node[(node.name, "server")]["state"] = "exited"

    [heal] = heal_due(queue)

    assert heal.state == OperationState.SUCCEEDED, heal.error
    assert galera(fleet, second)["bootstrap"] is True
    assert fleet.on_node[(second.name, "server")]["bootstrapped"]
    assert not any(galera(fleet, node)["bootstrap"] for node in (first, third))
    assert all(fleet.on_node[(n.name, "server")]["state"] == "running" for n in (first, second, third))
    event = Event.objects.filter(service=shopdb, action="galera.bootstrap").get()
    assert f"started it again from {second.name}, the most advanced (seqno 57; others: " in event.message
    assert f"{first.name} at 41" in event.message


def test_a_dead_member_is_replaced_by_a_new_one_that_joins_the_others(shopdb, fleet, cloud, queue):
    scale(queue, shopdb, 3)
    url = shopdb.url
    dead = servers(shopdb)[1]
    cloud.stop(dead.name)

    [heal] = heal_due(queue)

    assert heal.state == OperationState.SUCCEEDED, heal.error
    now = servers(shopdb)
    assert dead not in now and len(now) == 3
    newest = now[-1]
    peers = galera(fleet, newest)["peers"]
    assert len(peers) == 2 and galera(fleet, newest)["bootstrap"] is False
    shopdb.refresh_from_db()
    assert shopdb.url == url


def test_scaling_down_stops_the_members_cleanly_before_their_nodes_go(shopdb, fleet, queue):
    scale(queue, shopdb, 3)
    going = servers(shopdb)[1:]

    operation = scale(queue, shopdb, 1)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    stopped = [call for call in fleet.calls_to("delete_instance") if call[2] == "server"]
    assert sorted(call[0] for call in stopped) == sorted(node.name for node in going)
    assert len(servers(shopdb)) == 1


def test_a_backup_is_a_sql_dump_restored_on_a_scratch_node_to_verify_it(
    shopdb,
    fleet,
    queue,
    monkeypatch,
    store,  # noqa: F811 (the fixture imported above)
):
    dumped = []

    def dump(server, path):
        dumped.append(server)
        with open(path, "w") as fh:
            fh.write("-- dump\n")

    monkeypatch.setattr(data_probes, "mysql_dump", dump)
    monkeypatch.setattr(data_probes, "mysql_table_counts", lambda server: {"conpaas/items": 3})

    operation = queue.start(lambda: backups.request_backup(shopdb, shopdb.owner))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    backup = shopdb.backups.get()
    assert (backup.kind, backup.state, backup.verified) == (BackupKind.SQL, BackupState.COMPLETED, True)
    assert dumped[0].host == shopdb.router_node().address  # through the router: a synced member
    assert store[backup.backup_id] == b"-- dump\n"
    restored = [spec for name, spec in fleet.specs.items() if name.startswith("verify-")]
    assert restored[0]["restore"] == {"url": f"http://store/{backup.backup_id}.sql?signed"}
    assert "1 tables, 3 rows" in backup.verification
