"""Backups of data services: the policy, taking one (then verifying it and applying keep_days),
the schedule, and restoring, in place or into a new service (README, Backups and restore).

A backup goes to the backup store (services/backup_store.py). PostgreSQL: the server archives
its WAL there all the time (data_servers.start_server), and a backup is a base backup taken by
the agent with barman-cloud; any second from the oldest kept base backup to the last archived
WAL can be restored. Redis: the worker takes the server's RDB (redis-cli --rdb) and uploads it.
MySQL: the worker dumps the service's database in one consistent read (mariadb-dump
--single-transaction, through the router: a synced member) and uploads the SQL.

Every backup is verified: restored into a scratch instance `verify-<id>` on a scratch node of
the service's own (booted for it, not counted in the owner's quota, destroyed whatever happens:
never the source's node, so a verification neither competes with the server nor hides a backup
that only restores where it was taken), then checked (PostgreSQL, MySQL: count(*) over every
table of every database; Redis: the key count recorded at backup time). A backup that fails or cannot be
verified is a failed Event and the service's `backup_problem`; the next good one clears it.
"""

import os
import secrets
import tempfile
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from services import agent, backup_store, data_probes, operations
from services.choices import (
    DATABASE_RUNTIMES,
    BackupKind,
    BackupState,
    NodeState,
    OperationKind,
    OperationState,
    Outcome,
    Runtime,
    ServiceState,
)
from services.clouds import RouterPlace
from services.data_servers import SERVER, Server, start_server
from services.errors import Conflict, ConpaasError, OperationFailed
from services.models import Backup, Event, Node, Operation, Service
from services.nodes import boot_node, destroy_node, remove_from_cloud
from workflows import lifecycle, replication

KINDS = {Runtime.POSTGRESQL: BackupKind.BASE, Runtime.REDIS: BackupKind.RDB, Runtime.MYSQL: BackupKind.SQL}
POLICY_FIELDS = ("backup_enabled", "backup_every_hours", "backup_keep_days")
ARCHIVE_PROBLEM = "WAL archiving fails: "
# PostgreSQL's words when the archived WAL ends before a recovery's target time.
TARGET_NOT_REACHED = "recovery ended before configured recovery target was reached"


# --- the policy ---------------------------------------------------------------------------


def require_data(service: Service) -> None:
    if service.runtime not in DATABASE_RUNTIMES:
        raise Conflict(f"{service.name} is a {service.runtime} service: only postgresql, redis and mysql have backups")


def policy(service: Service) -> dict:
    return {
        "enabled": service.backup_enabled,
        "every_hours": service.backup_every_hours,
        "keep_days": service.backup_keep_days,
    }


def configure(service: Service, user, **values) -> dict:
    """Change the policy (`enabled`, `every_hours`, `keep_days`; the others kept). ValidationError
    keyed by the API's field names; saves nothing then."""
    require_data(service)
    for name, value in values.items():
        setattr(service, f"backup_{name}", value)
    try:
        service.validate()
    except ValidationError as exc:
        raise ValidationError(
            {name.removeprefix("backup_"): errors for name, errors in exc.message_dict.items()}
        ) from None
    Service.objects.filter(pk=service.pk).update(**{name: getattr(service, name) for name in POLICY_FIELDS})
    if service.backup_enabled:
        message = f"backups on: every {service.backup_every_hours} h, kept {service.backup_keep_days} days"
    else:
        message = "backups off (those kept stay until removed by a backup's keep_days)"
    Event.record(service, "backup.policy", message, actor=user)
    return policy(service)


# --- what the API lists -------------------------------------------------------------------


def recovery_window(service: Service, backup: Backup | None = None) -> dict:
    """PostgreSQL: from the oldest kept base backup's end, or the end of the last restore in place
    when later, to the last archived WAL (as the workers last read it); `to` None when nothing
    since that restore is archived yet. Redis: the snapshot's moment."""
    if service.runtime != Runtime.POSTGRESQL:
        return {"from": backup.time, "to": backup.time} if backup else {"from": None, "to": None}
    completed = service.backups.filter(state=BackupState.COMPLETED, end_time__isnull=False)
    oldest = completed.order_by("end_time").first()
    newest = completed.order_by("-end_time").first()
    if oldest is None:
        return {"from": None, "to": None}
    until, since = service.backup_archived_until, service.backup_history_from
    to = max(until, newest.end_time) if until else newest.end_time
    if since is None or since <= oldest.end_time:
        return {"from": oldest.end_time, "to": to}
    return {"from": since, "to": to if to > since else None}


# --- taking one ---------------------------------------------------------------------------


def request_backup(service: Service, user) -> Operation:
    require_data(service)
    if service.state != ServiceState.RUNNING:
        raise Conflict(f"{service.name} is {service.state}: no running server to back up")
    backup_store.require()  # refused at once when there is no store (its bucket is the worker's to make)
    return operations.start(service, OperationKind.BACKUP, user, message="backup requested")


def run_backup(operation) -> str:
    """Take a backup, verify it, then apply keep_days. Failing anywhere: `backup_problem` set and
    the operation failed (never a silent success)."""
    service = operation.service
    try:
        location = backup_store.target_for(service)
        backup = take(service, location, operation)
        verify(service, backup, location, operation)
    except ConpaasError as exc:
        Service.objects.filter(pk=service.pk).update(backup_problem=f"backup failed: {exc}")
        raise OperationFailed(str(exc)) from None
    if not backup.verified:
        problem = f"backup {backup.backup_id} could not be verified: {backup.verification}"
        Service.objects.filter(pk=service.pk).update(backup_problem=problem)
        raise OperationFailed(problem)
    problem = read_archive(service) if service.runtime == Runtime.POSTGRESQL else ""
    Service.objects.filter(pk=service.pk).update(backup_problem=problem)
    removed = apply_retention(service, location, operation)
    kept = f"; {removed} older backup(s) removed (keep_days {service.backup_keep_days})" if removed else ""
    if problem:
        raise OperationFailed(f"backup {backup.backup_id} verified, but {problem}{kept}")
    return f"backup {backup.backup_id} taken ({backup.size or 0:,} bytes) and verified: {backup.verification}{kept}"


def take(service: Service, location: dict, operation) -> Backup:
    server_node = service.server_node()
    if server_node is None:
        raise OperationFailed(f"{service.name} has no running server")
    kind = KINDS[service.runtime]
    backup = Backup.objects.create(service=service, kind=kind)
    operation.set_progress("taking the backup")
    try:
        if kind == BackupKind.BASE:
            taken = agent.client_for(server_node).backup(SERVER)
            backup.backup_id = taken["backup_id"]
            backup.begin_time = parse_time(taken.get("begin_time"))
            backup.end_time = parse_time(taken.get("end_time"))
            backup.size = taken.get("size")
        else:
            backup.backup_id = timezone.now().strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
            backup.begin_time = timezone.now()
            server = Server.of(service)
            with tempfile.TemporaryDirectory(prefix="snapshot-") as scratch:
                path = os.path.join(scratch, "snapshot")
                if kind == BackupKind.RDB:
                    backup.key_count = data_probes.redis_key_count(server)
                    data_probes.redis_snapshot(server, path)
                else:
                    data_probes.mysql_dump(server, path)
                backup.size = os.path.getsize(path)
                operation.set_progress(f"uploading the snapshot ({backup.size:,} bytes)")
                try:
                    backup_store.upload_snapshot(location, backup.backup_id, kind, path)
                except Exception as exc:  # boto3 raises many types; the store's words are the point
                    raise OperationFailed(f"the backup store refused the snapshot: {exc}") from None
            backup.end_time = timezone.now()
    except agent.AgentError as exc:
        fail(backup, f"the agent of {server_node.name} could not take it: {exc.detail}")
    except ConpaasError as exc:
        fail(backup, str(exc))
    backup.state = BackupState.COMPLETED
    backup.save()
    Event.record(
        service, "backup", f"backup {backup.backup_id} taken ({backup.size or 0:,} bytes)", operation=operation
    )
    return backup


def fail(backup: Backup, error: str):
    backup.state, backup.error = BackupState.FAILED, error
    backup.save()
    raise OperationFailed(error)


def parse_time(value) -> datetime | None:
    return parse_datetime(value) if value else None


# --- verifying ----------------------------------------------------------------------------


def verify(service: Service, backup: Backup, location: dict, operation) -> None:
    """Restore the backup into `verify-<id>` on a scratch node and check it; records the verdict
    on the backup (verified True or False with the reason). The scratch node is destroyed
    whatever happened."""
    for left in service.live_nodes().filter(scratch=True):
        # A verification whose worker died left its scratch node: it goes now, not never.
        operation.set_progress(f"destroying {left.name}, left by an interrupted verification")
        destroy_node(left, operation)
    operation.set_progress("booting a scratch node to verify the backup")
    instance = f"verify-{backup.pk}"
    try:
        node = boot_node(service, ["backend"], operation, scratch=True)
    except ConpaasError as exc:
        record_verdict(service, backup, False, f"no scratch node to restore it on: {exc}", operation)
        return
    try:
        operation.set_progress(f"restoring the backup on {node.name} to verify it")
        # PostgreSQL: the base backup and all the WAL archived after it (target_time null), so the
        # check covers what a restore to any later moment needs; a target at the backup's own end
        # fails when nothing committed after it ("recovery ended before the target was reached").
        restore = {**restore_spec(backup, location), "target_time": None} if backup.kind == BackupKind.BASE else None
        restore = restore or restore_spec(backup, location)
        spec = {"runtime": service.runtime, "password": service.password, "restore": restore}
        port = agent.client_for(node).put_instance(instance, spec)["port"]
        server = Server(service.runtime, node.address, port, service.password)
        if backup.kind in (BackupKind.BASE, BackupKind.SQL):
            base = backup.kind == BackupKind.BASE
            counts = data_probes.pg_table_counts(server) if base else data_probes.mysql_table_counts(server)
            backup.table_counts = counts
            verdict = f"restored on {node.name}: {len(counts)} tables, {sum(counts.values()):,} rows"
            record_verdict(service, backup, True, verdict, operation)
        else:
            keys = data_probes.redis_key_count(server)
            if keys == backup.key_count:
                record_verdict(service, backup, True, f"restored on {node.name}: {keys:,} keys", operation)
            else:
                said = f"restored on {node.name}: {keys:,} keys, {backup.key_count:,} when it was taken"
                record_verdict(service, backup, False, said, operation)
    except agent.AgentError as exc:
        record_verdict(service, backup, False, f"the restore failed on {node.name}: {exc.detail}", operation)
    except ConpaasError as exc:
        record_verdict(service, backup, False, f"the restored copy could not be checked: {exc}", operation)
    finally:
        try:
            agent.client_for(node).delete_instance(instance, purge=True)
        except agent.AgentError:
            pass  # the node goes next, with everything on it
        destroy_node(node, operation)


def record_verdict(service: Service, backup: Backup, ok: bool, detail: str, operation) -> None:
    backup.verified, backup.verification = ok, detail
    backup.save(update_fields=["verified", "verification", "table_counts"])
    outcome = Outcome.SUCCEEDED if ok else Outcome.FAILED
    said = "verified" if ok else "NOT verified"
    Event.record(service, "backup.verify", f"backup {backup.backup_id} {said}: {detail}", outcome, operation=operation)


def restore_spec(backup: Backup, location: dict, target_time: datetime | None = None) -> dict:
    """The instance spec's `restore` (backup_wire.md) of `backup`: PostgreSQL up to `target_time`
    (default: the backup's own end, the state it holds), Redis its RDB through a presigned URL."""
    if backup.kind == BackupKind.BASE:
        until = target_time or backup.end_time
        return {
            "from": backup_store.for_nodes(location),
            "backup_id": backup.backup_id,
            "target_time": until.isoformat() if until else None,
        }
    return {"url": backup_store.snapshot_url(location, backup.backup_id, backup.kind)}


def read_archive(service: Service) -> str:
    """Save how far the WAL is archived (the recovery window's end); returns the archive's
    problem in words, or ''."""
    node = service.server_node()
    try:
        said = agent.client_for(node).backups(SERVER, archive_only=True)  # every few seconds: cheap
    except agent.AgentError as exc:
        return f"{ARCHIVE_PROBLEM}the archive could not be read: {exc.detail}"
    until = parse_time(said.get("archived_until"))
    if until is not None:
        Service.objects.filter(pk=service.pk).update(backup_archived_until=until)
        service.backup_archived_until = until
    failing = said.get("archive_failing")
    return f"{ARCHIVE_PROBLEM}{failing}" if failing else ""


def forget_archive(service: Service) -> None:
    """A restored server starts a new timeline: how far the old one was archived says nothing of
    it (the recovery window ends at the newest backup until the new server archives a segment)."""
    Service.objects.filter(pk=service.pk).update(backup_archived_until=None)
    service.backup_archived_until = None


# --- keep_days ----------------------------------------------------------------------------


def apply_retention(service: Service, location: dict, operation) -> int:
    """Delete the backups older than keep_days, always keeping the newest verified one. Returns
    how many were removed; one the store will not delete stays, said in an Event."""
    cutoff = timezone.now() - timedelta(days=service.backup_keep_days)
    newest = service.backups.filter(state=BackupState.COMPLETED, verified=True).order_by("-created", "-id").first()
    old = service.backups.filter(created__lt=cutoff).exclude(state=BackupState.RUNNING)
    if newest is not None:
        old = old.exclude(pk=newest.pk)
    removed = 0
    for backup in old:
        try:
            if backup.state == BackupState.COMPLETED and backup.backup_id:
                if backup.kind == BackupKind.BASE:
                    agent.client_for(service.server_node()).delete_backup(SERVER, backup.backup_id)
                else:
                    backup_store.delete_snapshot(location, backup.backup_id, backup.kind)
        except Exception as exc:  # the agent's or the store's error: kept, tried again next time
            detail = getattr(exc, "detail", str(exc))
            message = f"backup {backup.backup_id} is past keep_days but could not be removed: {detail}"
            Event.record(service, "backup.expire", message, Outcome.FAILED, operation=operation)
            continue
        backup.delete()
        removed += 1
    return removed


# --- the schedule -------------------------------------------------------------------------


def start_due(now: datetime | None = None) -> int:
    """Start a backup of each running data service whose policy is on and whose last backup (or
    attempt) is older than its every_hours; none while backups are not configured. Returns how
    many were started."""
    if not backup_store.configured():
        return 0
    now = now or timezone.now()
    started = 0
    data = Service.objects.filter(runtime__in=DATABASE_RUNTIMES, state=ServiceState.RUNNING)
    for service in data.filter(backup_enabled=True):
        attempts = Operation.objects.filter(service=service, kind=OperationKind.BACKUP)
        if attempts.filter(state__in=[OperationState.PENDING, OperationState.RUNNING]).exists():
            continue
        last = attempts.order_by("-created").values_list("created", flat=True).first()
        if last is not None and now - last < timedelta(hours=service.backup_every_hours):
            continue
        operations.start(service, OperationKind.BACKUP, None, message="scheduled backup")
        started += 1
    return started


def refresh_archives() -> int:
    """Save how far each PostgreSQL service's WAL is archived (the end of its recovery window),
    and say when archiving fails (or no longer fails) in its `backup_problem`. Returns how many."""
    if not backup_store.configured():
        return 0
    # A service held by an operation is left alone: a restore has its server down a while.
    running = Service.objects.filter(runtime=Runtime.POSTGRESQL, state=ServiceState.RUNNING, locked_by__isnull=True)
    refreshed = 0
    for service in running.filter(backups__state=BackupState.COMPLETED).distinct():
        if service.server_node() is None:
            continue
        problem = read_archive(service)
        if problem:
            Service.objects.filter(pk=service.pk, backup_problem="").update(backup_problem=problem)
        else:  # only an archive problem clears here; a failed backup's waits for a good backup
            Service.objects.filter(pk=service.pk, backup_problem__startswith=ARCHIVE_PROBLEM).update(backup_problem="")
        refreshed += 1
    return refreshed


# --- restoring ----------------------------------------------------------------------------


def request_restore(
    service: Service, user, backup_pk: int | None = None, time: datetime | None = None, into: str = ""
) -> Operation:
    """Restore `service` from a backup, or (PostgreSQL) to a moment, in place or into a new
    service named `into`. Every refusal (ValidationError keyed by field, Conflict) stores nothing."""
    require_data(service)
    if not into and service.backend_nodes > 1:
        # Its replicas would have to be rebuilt from the restored primary, and Sentinel would
        # fail over to one of them while the primary restores.
        raise Conflict(
            f"{service.name} runs {service.backend_nodes} servers: scale it to 1 before restoring in place, "
            "or restore into a new service"
        )
    if (backup_pk is None) == (time is None):
        raise ValidationError({"backup": "give either a backup or a time, not both and not neither"})
    if time is not None and service.runtime != Runtime.POSTGRESQL:
        raise ValidationError({"time": f"a {service.runtime} service restores only a backup (its snapshots)"})
    backup_store.require()
    if backup_pk is not None:
        backup = service.backups.filter(pk=backup_pk, state=BackupState.COMPLETED).first()
        if backup is None:
            raise ValidationError({"backup": f"{service.name} has no completed backup {backup_pk}"})
        params = {"backup": backup.pk, "time": None}
        said = f"backup {backup.backup_id}"
    else:
        backup = base_for(service, time)
        params = {"backup": backup.pk, "time": time.isoformat()}
        said = time.isoformat()
    if not into:
        if service.state != ServiceState.RUNNING:
            raise Conflict(f"{service.name} is {service.state}: no server to restore into")
        return operations.start(
            service, OperationKind.RESTORE, user, params=params, message=f"restore of {said} in place requested"
        )
    with transaction.atomic():
        try:
            new, _ = lifecycle.create(user if user.pk == service.owner_id else service.owner, into, service.runtime)
        except ValidationError as exc:
            raise ValidationError({"into": exc.message_dict.get("name", exc.messages)}) from None
        # The restored data holds the source's roles: the new service has the source's credentials.
        Service.objects.filter(pk=new.pk).update(password=service.password)
        return operations.start(
            new,
            OperationKind.RESTORE,
            user,
            params={**params, "source": service.pk},
            message=f"restore of {service.name}'s {said} into {new.name} requested",
        )


def base_for(service: Service, time: datetime) -> Backup:
    """The base backup a restore to `time` starts from: the newest completed one ending by then;
    ValidationError naming `time` when it is outside the recovery window."""
    if timezone.is_naive(time):
        raise ValidationError({"time": "give the time with its offset (ISO 8601, e.g. 2026-12-07T20:15:00+00:00)"})
    completed = service.backups.filter(state=BackupState.COMPLETED, end_time__isnull=False)
    base = completed.filter(end_time__lte=time).order_by("-end_time").first()
    window = recovery_window(service)
    if window["from"] is None:
        raise ValidationError({"time": f"{time.isoformat()} is outside the recovery window (empty: no backup yet)"})
    if window["to"] is None:
        raise ValidationError(
            {
                "time": f"{time.isoformat()} is outside the recovery window: {service.name} was restored in place at "
                f"{window['from'].isoformat()} and nothing written since is archived yet (restore a backup by its id)"
            }
        )
    if base is None or not window["from"] <= time <= window["to"]:
        said = f"{time.isoformat()} is outside the recovery window ({window['from']} to {window['to']})"
        if service.backup_history_from and time < service.backup_history_from:
            said += f": {service.name} was restored in place at {service.backup_history_from.isoformat()}, which "
            said += "replaced the history before it (restore a backup by its id)"
        raise ValidationError({"time": said})
    return base


def run_restore(operation) -> str:
    """Replace the service's server's data with the backup's: stop and remove the server, PUT it
    again with `restore` (same address when the agent keeps the port, same credentials); the
    operation's end passes a changed address to the linking services (workflows/tasks.py MOVES)."""
    service = operation.service
    source = Service.objects.filter(pk=operation.params.get("source", service.pk)).first()
    backup = Backup.objects.filter(pk=operation.params["backup"]).first()
    if source is None or backup is None:
        raise OperationFailed("the backup is gone (its service was deleted, or keep_days removed it)")
    location = backup_store.target_for(source)
    time = parse_time(operation.params.get("time"))
    node = service.server_node()
    if node is None:
        raise OperationFailed(f"{service.name} has no running server")
    operation.set_progress(f"stopping the {service.runtime} server on {node.name}")
    try:
        agent.client_for(node).delete_instance(SERVER, purge=True)  # its data goes: the backup's replaces it
    except agent.AgentError as exc:
        if exc.status == 404:  # removed by an earlier run of this operation, whose restore failed
            pass
        else:
            raise OperationFailed(f"the server on {node.name} could not be stopped: {exc.detail}") from None
    operation.set_progress(f"restoring {backup.backup_id} on {node.name}")
    forget_archive(service)
    replication.reset_dcs(service, operation)
    spec = restore_spec(backup, location, time)
    what = f"{source.name}'s backup {backup.backup_id}" + (f" up to {time.isoformat()}" if time else "")
    try:
        start_server(service, node, restore=spec)
    except OperationFailed as exc:
        if backup.kind != BackupKind.BASE or TARGET_NOT_REACHED not in str(exc):
            raise
        # Nothing committed after the target is in the archive (an idle database): all of it is
        # the state at the target. The agent removed the failed attempt's data.
        operation.set_progress(f"restoring {backup.backup_id} on {node.name} with all the archived WAL")
        start_server(service, node, restore={**spec, "target_time": None})
        what += " (the archive holds no transaction after it: all of it restored)"
    if service.is_routed:  # ends when the router sends the service's port to the restored server
        replication.converge(service, operation)
    if source == service:
        Service.objects.filter(pk=service.pk).update(backup_history_from=timezone.now())
    return f"{service.name} restored from {what}"


# --- a dead database node rebuilt (self-healing) ------------------------------------------


def rebuild(service: Service, dead: Node, operation) -> str:
    """A new node where `dead` was (its address: the cloud keeps it when it can), its server
    restored from the newest backup and, for PostgreSQL, all the WAL archived after it, on the
    dead server's port, with the service's password: its linked apps' URLs stay right. Returns
    what was kept: the recovery point (the last transaction replayed) and how long it took."""
    began = timezone.now()
    newest = service.backups.filter(state=BackupState.COMPLETED).order_by("-end_time", "-id").first()
    if not backup_store.configured() or newest is None:
        raise OperationFailed(f"{service.name}'s node {dead.name} is dead and there is no backup to rebuild it from")
    location = backup_store.target_for(service)
    operation.set_progress(f"booting a node where {dead.name} was ({dead.address})")
    remove_from_cloud(dead)  # its address is free for the replacement
    place = RouterPlace(dead.address, dead.http_port) if dead.address else None
    node = boot_node(service, ["backend"], operation, place)
    destroy_node(dead, operation)
    if newest.kind == BackupKind.BASE:
        # The newest base backup and every WAL segment archived after it: all that was archived.
        spec = {"from": backup_store.for_nodes(location), "backup_id": None, "target_time": None}
    else:
        spec = restore_spec(newest, location)
    operation.set_progress(f"restoring {service.name}'s server on {node.name} from {newest.backup_id}")
    forget_archive(service)
    replication.reset_dcs(service, operation)
    try:
        start_server(service, node, restore=spec, port=dead.data_port)
    except OperationFailed as exc:
        if f"port {dead.data_port} is in use" not in str(exc):
            raise
        start_server(service, node, restore=spec, port=None)  # another port: the linked apps are told
    if service.is_routed:  # the router to the rebuilt server (a dead router replaced where it was)
        dead_routers = list(service.live_nodes().filter(state=NodeState.FAILED, is_proxy=True))
        if dead_routers:
            replication.heal(service, dead_routers, operation)
        else:
            replication.converge(service, operation)
    if newest.kind == BackupKind.BASE:
        replayed = node.data_details.get("recovery_point")
        if replayed is None:  # an agent that does not say it
            replayed = data_probes.pg_recovery_point(Server.of(service))
        point = (
            f"the last transaction kept committed at {replayed}"
            if replayed
            else (f"the base backup's end, {newest.end_time.isoformat()} (no transaction after it was archived)")
        )
    else:
        point = f"the snapshot of {newest.end_time.isoformat()} (a {service.runtime} backup: writes after it are lost)"
    took = (timezone.now() - began).total_seconds()
    where = (
        "the same address and port"
        if node.address == dead.address and node.data_port == dead.data_port
        else (f"{node.address}:{node.data_port} (the linked services are given the new address)")
    )
    # The heal operation's end records it as its succeeded event.
    return f"rebuilt {dead.name} as {node.name} at {where} in {took:.1f} s; recovery point: {point}"
