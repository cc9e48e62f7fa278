"""Backups of data services against the fake agent: taking one, verifying it on a scratch node,
keep_days, the schedule and restoring; every failure a failed Event and `backup_problem`. The
database clients (services/data_probes.py) and the S3 uploads are stand-ins here; the real
path is tests/e2e/test_backups.py."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from services import backup_store, data_probes, operations, quotas
from services.backup_store import NOT_CONFIGURED, BackupsNotConfigured
from services.choices import BackupKind, BackupState, NodeState, OperationKind, OperationState
from services.data_servers import Server
from services.errors import Conflict
from services.models import Backup, Event, Node, Operation, Service
from tests.factories import ServiceFactory
from workflows import backups, healing, lifecycle


@pytest.fixture(autouse=True)
def store(settings, monkeypatch):
    """A configured backup store whose Redis uploads land in `uploaded` (name -> bytes)."""
    settings.CONPAAS_BACKUP_S3_ENDPOINT = "http://10.9.9.9:8333"
    settings.CONPAAS_BACKUP_S3_BUCKET = "conpaas-backups"
    settings.CONPAAS_BACKUP_S3_ACCESS_KEY = "AK"
    settings.CONPAAS_BACKUP_S3_SECRET_KEY = "SECRET-KEY"
    uploaded = {}
    monkeypatch.setattr(
        backup_store, "upload_snapshot", lambda loc, bid, kind, path: uploaded.update({bid: open(path, "rb").read()})
    )
    monkeypatch.setattr(backup_store, "snapshot_url", lambda loc, bid, kind: f"http://store/{bid}.{kind}?signed")
    monkeypatch.setattr(backup_store, "delete_snapshot", lambda loc, bid, kind: uploaded.pop(bid))
    return uploaded


class Probes:
    """The data servers as the workers' clients see them: rows per table, keys by server port."""

    def __init__(self):
        self.tables = {"conpaas/public.items": 3}
        self.keys: dict[int, int] = {}  # by server port
        self.restored_keys = 0  # what any other server (a scratch one) holds
        self.failing = ""
        self.recovery_point = "2026-12-07T20:09:58.25+00"

    def pg_recovery_point(self, server):
        return self.recovery_point

    def pg_table_counts(self, server):
        if self.failing:
            raise backups.OperationFailed(self.failing)
        return dict(self.tables)

    def redis_key_count(self, server):
        return self.keys.get(server.port, self.restored_keys)

    def redis_snapshot(self, server, path):
        with open(path, "wb") as fh:
            fh.write(b"REDIS0011")


@pytest.fixture(autouse=True)
def probes(monkeypatch):
    probes = Probes()
    for name in ("pg_table_counts", "redis_key_count", "redis_snapshot", "pg_recovery_point"):
        monkeypatch.setattr(data_probes, name, getattr(probes, name))
    return probes


def create(alice, queue, runtime="postgresql", name="wikidb"):
    made = {}

    def request():
        made["service"], operation = lifecycle.create(alice, name, runtime)
        return operation

    queue.start(request)
    made["service"].refresh_from_db()
    return made["service"]


def back_up(queue, service, user=None):
    operation = queue.start(lambda: backups.request_backup(service, user or service.owner))
    service.refresh_from_db()
    return operation


def test_it_takes_a_postgresql_backup_and_verifies_it_on_a_scratch_node_it_destroys(alice, fleet, cloud, queue):
    service = create(alice, queue)
    assert fleet.instances["server"]["backup"] == backup_store.target_for(service)
    fleet.archived_until = "2026-12-07T20:05:00+00:00"

    operation = back_up(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    backup = service.backups.get()
    assert (backup.kind, backup.backup_id, backup.state, backup.size) == ("base", "20261207T200001", "completed", 1000)
    assert backup.verified is True and backup.table_counts == {"conpaas/public.items": 3}
    restore = next(
        spec for node, method, spec in fleet.calls if method == "put_instance" and spec == f"verify-{backup.pk}"
    )
    assert restore
    scratch = Node.objects.get(scratch=True)
    assert scratch.state == NodeState.DESTROYED and len(cloud.list_nodes()) == 2  # its router and server
    assert (scratch.name, "delete_instance", f"verify-{backup.pk}") in fleet.calls
    assert service.backup_problem == ""
    assert service.backup_archived_until == datetime(2026, 12, 7, 20, 5, tzinfo=UTC)
    verified = Event.objects.get(action="backup.verify")
    assert verified.outcome == "succeeded" and "1 tables, 3 rows" in verified.message
    assert "SECRET-KEY" not in str(list(Event.objects.values_list("message", flat=True)))
    assert "SECRET-KEY" not in str(list(Operation.objects.values_list("params", "progress", "error")))


def test_the_verifier_restores_the_backup_and_its_wal_and_archives_nothing(alice, fleet, queue):
    service = create(alice, queue)
    back_up(queue, service)
    backup = service.backups.get()
    spec = fleet.specs[f"verify-{backup.pk}"]
    assert f"verify-{backup.pk}" not in fleet.instances, "the scratch instance is deleted"
    assert "backup" not in spec
    location = backup_store.target_for(service)
    # All the WAL after the backup too: the check covers what any later moment needs.
    assert spec["restore"] == {"from": location, "backup_id": backup.backup_id, "target_time": None}


def test_a_scratch_node_is_not_counted_in_the_owners_node_quota(alice, queue):
    service = create(alice, queue)
    Node.objects.create(service=service, name="scratch-1", cloud="memory", is_backend=True, scratch=True)
    assert quotas.node_counts(alice)[service.pk] == 2  # its router and its server


def test_without_a_store_a_backup_is_refused_saying_how_to_configure_it(alice, queue, settings):
    service = create(alice, queue)
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    before = Operation.objects.count()
    with pytest.raises(BackupsNotConfigured, match=r"backups are not configured: set CONPAAS_BACKUP_S3_\*"):
        backups.request_backup(service, alice)
    assert Operation.objects.count() == before and not Backup.objects.exists()
    assert NOT_CONFIGURED.endswith("(README, Backups)")


def test_a_backup_the_agent_fails_is_a_failed_operation_and_the_services_problem(alice, fleet, queue):
    service = create(alice, queue)
    fleet.backup_failing = "barman-cloud-backup: connection refused by the store"

    operation = back_up(queue, service)

    assert operation.state == OperationState.FAILED
    assert "connection refused by the store" in operation.error
    assert service.backup_problem.startswith("backup failed: the agent of")
    assert service.backups.get().state == BackupState.FAILED
    assert Event.objects.filter(operation=operation, outcome="failed").exists()
    assert not Node.objects.filter(scratch=True).exists(), "nothing to verify: no scratch node"


def test_a_backup_that_does_not_restore_is_unverified_failed_and_its_scratch_node_destroyed(alice, fleet, queue):
    service = create(alice, queue)
    fleet.restore_failing = "barman-cloud-restore: no backup named 20261207T200001"

    operation = back_up(queue, service)

    assert operation.state == OperationState.FAILED
    backup = service.backups.get()
    assert backup.state == BackupState.COMPLETED and backup.verified is False
    assert "no backup named" in backup.verification
    assert service.backup_problem.startswith(f"backup {backup.backup_id} could not be verified: the restore failed")
    assert Node.objects.get(scratch=True).state == NodeState.DESTROYED
    assert Event.objects.get(action="backup.verify").outcome == "failed"


def test_a_restored_copy_that_cannot_be_queried_is_unverified(alice, queue, probes):
    service = create(alice, queue)
    probes.failing = "psql failed: relation is corrupt"
    operation = back_up(queue, service)
    assert operation.state == OperationState.FAILED
    assert "could not be checked: psql failed: relation is corrupt" in service.backups.get().verification


def test_a_later_good_backup_clears_the_problem(alice, fleet, queue):
    service = create(alice, queue)
    fleet.backup_failing = "disk full"
    back_up(queue, service)
    assert service.backup_problem
    fleet.backup_failing = ""
    assert back_up(queue, service).state == OperationState.SUCCEEDED
    assert service.backup_problem == ""


def test_failing_wal_archiving_is_the_services_problem_even_when_the_backup_verifies(alice, fleet, queue):
    service = create(alice, queue)
    fleet.archive_failing = "barman-cloud-wal-archive: access denied"
    operation = back_up(queue, service)
    assert operation.state == OperationState.FAILED
    assert service.backups.get().verified is True
    assert service.backup_problem == "WAL archiving fails: barman-cloud-wal-archive: access denied"
    fleet.archive_failing = None
    Service.objects.filter(pk=service.pk).update(locked_by=Operation.objects.first())
    assert backups.refresh_archives() == 0, "a service held by an operation is left alone"
    Service.objects.filter(pk=service.pk).update(locked_by=None)
    assert backups.refresh_archives() == 1
    service.refresh_from_db()
    assert service.backup_problem == ""


def test_a_redis_backup_is_an_rdb_in_the_store_verified_by_its_key_count(alice, fleet, queue, store, probes):
    service = create(alice, queue, "redis", "cache")
    probes.keys, probes.restored_keys = {service.server_node().data_port: 42}, 42

    operation = back_up(queue, service)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    backup = service.backups.get()
    assert backup.kind == BackupKind.RDB and backup.key_count == 42 and backup.verified is True
    assert store == {backup.backup_id: b"REDIS0011"} and backup.size == 9
    assert fleet.instances["server"]["restore"] is None
    verify = [s for n, m, s in fleet.calls if m == "put_instance" and s == f"verify-{backup.pk}"]
    assert verify


def test_a_redis_backup_whose_copy_lacks_keys_is_unverified(alice, queue, probes):
    service = create(alice, queue, "redis", "cache")
    probes.keys = {Server.of(service).port: 42}  # the scratch server answers 0 keys
    operation = back_up(queue, service)
    assert operation.state == OperationState.FAILED
    assert "0 keys, 42 when it was taken" in service.backups.get().verification
    assert "could not be verified" in service.backup_problem


def test_keep_days_removes_older_backups_but_the_newest_verified_one(alice, fleet, queue):
    service = create(alice, queue)
    Service.objects.filter(pk=service.pk).update(backup_keep_days=1)
    back_up(queue, service)
    old = service.backups.get()
    Backup.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=3))
    fleet.restore_failing = "broken"
    back_up(queue, service)  # unverified: the old one stays, the newest verified
    assert service.backups.count() == 2
    fleet.restore_failing = ""
    back_up(queue, service)
    assert service.backups.count() == 2 and not service.backups.filter(pk=old.pk).exists()
    assert ("delete_backup", old.backup_id) in [(m, a) for n, m, a in fleet.calls]
    assert [b["backup_id"] for b in fleet.base_backups] == ["20261207T200002", "20261207T200003"]


def test_the_schedule_starts_a_backup_of_each_data_service_that_is_due(alice, queue, settings):
    due = create(alice, queue)
    off = create(alice, queue, name="offdb")
    Service.objects.filter(pk=off.pk).update(backup_enabled=False)
    ServiceFactory(owner=alice, name="web")
    with queue.capture_on_commit(execute=True):
        assert backups.start_due() == 1
    assert Operation.objects.filter(kind=OperationKind.BACKUP).get().service == due
    queue.run()
    assert Operation.objects.get(kind=OperationKind.BACKUP).state == OperationState.SUCCEEDED
    assert backups.start_due() == 0, "backed up less than every_hours ago"
    assert backups.start_due(now=timezone.now() + timedelta(hours=25)) == 1
    settings.CONPAAS_BACKUP_S3_BUCKET = ""
    assert backups.start_due(now=timezone.now() + timedelta(hours=50)) == 0


def test_the_policy_is_on_by_default_and_changes_with_an_event(alice, queue):
    service = create(alice, queue)
    assert backups.policy(service) == {"enabled": True, "every_hours": 24, "keep_days": 7}
    assert backups.configure(service, alice, every_hours=6) == {"enabled": True, "every_hours": 6, "keep_days": 7}
    assert Event.objects.filter(action="backup.policy", message__contains="every 6 h").exists()
    with pytest.raises(ValidationError) as refused:
        backups.configure(service, alice, keep_days=0)
    assert "keep_days" in refused.value.message_dict
    service.refresh_from_db()
    assert service.backup_keep_days == 7


def test_a_web_service_has_no_backups(alice):
    web = ServiceFactory(owner=alice, name="web")
    with pytest.raises(Conflict, match="only postgresql, redis and mysql have backups"):
        backups.request_backup(web, alice)
    with pytest.raises(Conflict):
        backups.request_restore(web, alice, backup_pk=1)


def verified_backup(queue, alice, fleet):
    service = create(alice, queue)
    fleet.archived_until = "2026-12-07T20:10:00+00:00"
    back_up(queue, service)
    return service, service.backups.get()


def test_a_restore_in_place_replaces_the_servers_data_keeping_its_address(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    node = service.server_node()
    fleet.calls.clear()

    operation = queue.start(lambda: backups.request_restore(service, alice, backup_pk=backup.pk))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    methods = [(n, m, a) for n, m, a in fleet.calls if m in ("delete_instance", "put_instance")]
    router = service.router_node()
    # The members' etcd emptied, so that Patroni takes the restored server as the cluster it is.
    assert methods[:4] == [
        (node.name, "delete_instance", "server"),
        (router.name, "delete_instance", "dcs"),
        (router.name, "put_instance", "dcs"),
        (node.name, "put_instance", "server"),
    ]
    restore = fleet.instances["server"]["restore"]
    assert restore["backup_id"] == backup.backup_id and restore["target_time"] == "2026-12-07T20:00:01+00:00"
    assert fleet.instances["server"]["backup"] == backup_store.target_for(service), "it archives again"
    assert service.server_node() == node
    assert "server" in fleet.purged, "the old data is removed before the restore"
    assert operation.events.filter(outcome="succeeded").get().message.startswith("wikidb restored from")


def test_a_restore_to_a_time_starts_from_the_newest_base_backup_before_it(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    when = datetime(2026, 12, 7, 20, 7, tzinfo=UTC)
    operation = queue.start(lambda: backups.request_restore(service, alice, time=when))
    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert fleet.instances["server"]["restore"]["target_time"] == "2026-12-07T20:07:00+00:00"


def test_after_a_restore_in_place_the_window_starts_at_it(alice, fleet, queue):
    """The moments between the one restored to and the restore itself have two histories: a
    restore to one of them would follow the new one and give the restored data, not what the
    service held then (a new user's trial restored 1,000 rows of a moment that held 1,500)."""
    service, backup = verified_backup(queue, alice, fleet)
    operation = queue.start(lambda: backups.request_restore(service, alice, backup_pk=backup.pk))
    assert operation.state == OperationState.SUCCEEDED, operation.error
    service.refresh_from_db()
    restored_at = service.backup_history_from
    assert restored_at is not None and service.backup_archived_until is None
    assert backups.recovery_window(service) == {"from": restored_at, "to": None}
    with pytest.raises(ValidationError, match="was restored in place at .* nothing written since is archived yet"):
        backups.request_restore(service, alice, time=datetime(2026, 12, 7, 20, 7, tzinfo=UTC))

    # The restored server archives: from the restore on, any moment; before it, a backup by id.
    Service.objects.filter(pk=service.pk).update(backup_archived_until=restored_at + timedelta(minutes=5))
    service.refresh_from_db()
    assert backups.recovery_window(service) == {"from": restored_at, "to": restored_at + timedelta(minutes=5)}
    with pytest.raises(ValidationError, match="which replaced the history before it"):
        backups.request_restore(service, alice, time=datetime(2026, 12, 7, 20, 7, tzinfo=UTC))
    later = queue.start(lambda: backups.request_restore(service, alice, time=restored_at + timedelta(minutes=1)))
    assert later.state == OperationState.SUCCEEDED, later.error
    assert fleet.instances["server"]["restore"]["backup_id"] == backup.backup_id, "the base before, the new timeline"


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({}, "backup", "either a backup or a time"),
        ({"backup_pk": 1, "time": datetime(2026, 12, 7, 20, 7, tzinfo=UTC)}, "backup", "not both"),
        ({"backup_pk": 999}, "backup", "no completed backup 999"),
        ({"time": datetime(2026, 12, 7, 20, 30, tzinfo=UTC)}, "time", "outside the recovery window"),
        ({"time": datetime(2026, 12, 7, 19, 0, tzinfo=UTC)}, "time", "outside the recovery window"),
        ({"time": datetime(2026, 12, 7, 20, 7)}, "time", "with its offset"),
    ],
)
def test_a_restore_refused_names_the_field_and_stores_nothing(alice, fleet, queue, kwargs, field, words):
    service, _ = verified_backup(queue, alice, fleet)
    before = Operation.objects.count()
    with pytest.raises(ValidationError) as refused:
        backups.request_restore(service, alice, **kwargs)
    assert words in " ".join(refused.value.message_dict[field])
    assert Operation.objects.count() == before


def test_a_redis_service_restores_only_a_backup(alice, queue):
    cache = create(alice, queue, "redis", "cache")
    with pytest.raises(ValidationError) as refused:
        backups.request_restore(cache, alice, time=datetime(2026, 12, 7, 20, 7, tzinfo=UTC))
    assert "restores only a backup" in refused.value.message_dict["time"][0]


def test_a_redis_restore_sends_the_rdbs_presigned_url(alice, fleet, queue, probes):
    cache = create(alice, queue, "redis", "cache")
    probes.keys = {cache.server_node().data_port: 0}
    back_up(queue, cache)
    backup = cache.backups.get()
    operation = queue.start(lambda: backups.request_restore(cache, alice, backup_pk=backup.pk))
    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert fleet.instances["server"]["restore"] == {"url": f"http://store/{backup.backup_id}.rdb?signed"}


def test_a_restore_into_a_new_service_gives_it_the_sources_data_and_credentials(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    made = {}

    def request():
        made["operation"] = backups.request_restore(service, alice, backup_pk=backup.pk, into="wikidb-copy")
        return made["operation"]

    operation = queue.start(request)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    copy = Service.objects.get(name="wikidb-copy")
    assert copy.owner == alice and copy.runtime == "postgresql" and copy.password == service.password
    assert list(copy.operations.order_by("created").values_list("kind", flat=True)) == ["create", "restore"]
    restored = fleet.instances["server"]
    assert restored["restore"]["from"] == backup_store.target_for(service)
    assert restored["backup"] == backup_store.target_for(copy), "the copy archives to its own place"


def test_a_restore_into_an_existing_name_is_refused_on_into(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    services = Service.objects.count()
    with pytest.raises(ValidationError) as refused:
        backups.request_restore(service, alice, backup_pk=backup.pk, into="wikidb")
    assert "already have a service named wikidb" in refused.value.message_dict["into"][0]
    assert Service.objects.count() == services


def test_a_failed_restore_is_a_failed_operation_that_can_run_again(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    fleet.restore_failing = "barman-cloud-restore: the store is unreachable"
    operation = queue.start(lambda: backups.request_restore(service, alice, backup_pk=backup.pk))
    assert operation.state == OperationState.FAILED and "the store is unreachable" in operation.error
    fleet.restore_failing = ""
    again = queue.start(lambda: operations.start(service, OperationKind.RESTORE, alice, params=operation.params))
    assert again.state == OperationState.SUCCEEDED, again.error


def test_a_scratch_node_left_by_an_interrupted_verification_goes_at_the_next_backup(alice, cloud, queue):
    service = create(alice, queue)
    back_up(queue, service)
    left = Node.objects.get(scratch=True)
    Node.objects.filter(pk=left.pk).update(state=NodeState.RUNNING)  # as a worker killed mid-way leaves it
    cloud.create_node(left.name)

    assert back_up(queue, service).state == OperationState.SUCCEEDED
    assert not service.live_nodes().filter(scratch=True).exists()
    assert Event.objects.filter(action="node.destroy", message=f"destroyed node {left.name}").count() == 2


def test_a_target_past_the_last_archived_transaction_restores_the_whole_archive(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    fleet.restore_refusals = ["FATAL:  recovery ended before configured recovery target was reached"]

    operation = queue.start(lambda: backups.request_restore(service, alice, backup_pk=backup.pk))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert fleet.instances["server"]["restore"]["target_time"] is None
    ended = operation.events.get(outcome="succeeded").message
    assert ended.endswith("(the archive holds no transaction after it: all of it restored)")


def test_another_restore_refusal_fails_the_restore(alice, fleet, queue):
    service, backup = verified_backup(queue, alice, fleet)
    fleet.restore_refusals = ["barman-cloud-restore: access denied"]
    operation = queue.start(lambda: backups.request_restore(service, alice, backup_pk=backup.pk))
    assert operation.state == OperationState.FAILED and "access denied" in operation.error


# --- a dead database node rebuilt ---------------------------------------------------------


def heal_due(queue) -> list[Operation]:
    """One self-healing pass over every service, its heal operations run to their end."""
    with queue.capture_on_commit(execute=True):
        healing.check_due(0)
    queue.run()
    return list(Operation.objects.filter(kind=OperationKind.HEAL))


def test_a_dead_database_node_is_rebuilt_at_its_address_and_port_from_the_backups(alice, fleet, cloud, queue):
    service, backup = verified_backup(queue, alice, fleet)
    dead = service.server_node()
    url, password = service.connection_url(), service.password
    cloud.stop(dead.name)
    fleet.calls.clear()

    [operation] = heal_due(queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    node = service.server_node()
    assert node != dead and (node.address, node.data_port) == (dead.address, dead.data_port)
    assert service.connection_url() == url and Service.objects.get(pk=service.pk).password == password
    assert Node.objects.get(pk=dead.pk).state == NodeState.DESTROYED
    restore = fleet.on_node[(node.name, "server")]["restore"]
    assert restore["backup_id"] is None and restore["target_time"] is None, "the newest backup and all the WAL"
    assert fleet.on_node[(node.name, "server")]["backup"] == backup_store.target_for(service), "it archives again"
    rebuilt = operation.events.get(outcome="succeeded", message__startswith="rebuilt").message
    assert f"rebuilt {dead.name} as {node.name} at the same address and port in " in rebuilt
    assert rebuilt.endswith("recovery point: the last transaction kept committed at 2026-12-07T20:09:58.25+00")
    assert password not in rebuilt


def test_a_dead_redis_node_is_rebuilt_from_its_newest_snapshot(alice, fleet, cloud, queue, probes):
    service = create(alice, queue, runtime="redis", name="cache")
    probes.keys[Server.of(service).port] = 4
    probes.restored_keys = 4
    back_up(queue, service)
    newest = service.backups.get()
    cloud.stop(service.server_node().name)

    [operation] = heal_due(queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    rebuilt_at = service.server_node()
    assert fleet.on_node[(rebuilt_at.name, "server")]["restore"] == {
        "url": f"http://store/{newest.backup_id}.rdb?signed"
    }
    rebuilt = operation.events.get(outcome="succeeded", message__startswith="rebuilt").message
    assert f"recovery point: the snapshot of {newest.end_time.isoformat()}" in rebuilt


def test_a_database_without_a_backup_is_left_as_it_died(alice, fleet, cloud, queue):
    service = create(alice, queue)
    cloud.stop(service.server_node().name)

    assert heal_due(queue) == [], "a new node would come up empty"


def test_a_rebuild_whose_boot_fails_keeps_the_dead_nodes_address_for_the_next_try(alice, fleet, cloud, queue, settings):
    settings.CONPAAS_BOOT_ATTEMPTS = 1
    service, _ = verified_backup(queue, alice, fleet)
    dead = service.server_node()
    cloud.stop(dead.name)
    cloud.refusing = 1

    [failed] = heal_due(queue)

    assert failed.state == OperationState.FAILED and "InstanceLimitExceeded" in failed.error
    dead.refresh_from_db()
    assert dead.state == NodeState.FAILED and dead.address, "remembered for the next heal"
    assert service.server_node() is None
    Operation.objects.filter(pk=failed.pk).update(finished=timezone.now() - timedelta(seconds=healing.RETRY_FAILED))

    operation = next(op for op in heal_due(queue) if op != failed)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert (service.server_node().address, service.server_node().data_port) == (dead.address, dead.data_port)


def test_deleting_a_database_removes_its_backups_and_a_refusal_is_said_not_fatal(alice, queue, monkeypatch):
    forgotten = []

    def forget(service):
        forgotten.append(service.name)
        return "3 backup file(s), 4,096 bytes, removed from the backup store"

    monkeypatch.setattr(backup_store, "forget", forget)
    service = create(alice, queue)
    deleted = queue.start(lambda: lifecycle.request_delete(service, alice))
    assert deleted.state == OperationState.SUCCEEDED, deleted.error
    assert forgotten == ["wikidb"] and not Service.objects.filter(name="wikidb").exists()
    assert deleted.progress == "3 backup file(s), 4,096 bytes, removed from the backup store", "after its events"
    said = Event.objects.get(action="backup", operation=deleted)
    assert (said.outcome, said.message) == ("succeeded", "3 backup file(s), 4,096 bytes, removed from the backup store")

    def refuse(service):
        raise backup_store.object_storage.StoreError("deleting the backups in backups/services/9/: AccessDenied")

    monkeypatch.setattr(backup_store, "forget", refuse)
    other = create(alice, queue, name="otherdb")
    deleted = queue.start(lambda: lifecycle.request_delete(other, alice))
    assert deleted.state == OperationState.SUCCEEDED, "the service goes; what stays is said"
    said = Event.objects.get(action="backup", operation=deleted)
    assert said.outcome == "failed" and said.message.startswith("its backups stay in the backup store: deleting")
    assert not Service.objects.filter(name="otherdb").exists()
