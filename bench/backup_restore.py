"""Backup and restore: a PostgreSQL service's verified base backup and its restore, beside
`pg_dump -Fc` / `pg_restore` of the same data in the same run; and a point-in-time restore of a
database under steady writes: exactly the rows committed up to the chosen moment.

Backups need a store: the program starts its own SeaweedFS (tests/s3_store.py, on 127.0.0.1;
isolated nodes reach it through the bridge's gateway, which the local cloud forwards) and gives
the platform `CONPAAS_BACKUP_S3_*`, with `CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S` (default 1: a WAL
segment is archived at least every second while there are writes) and
`CONPAAS_BACKUP_CHECK_INTERVAL` (default 10: how often the recovery window's end is read).

Part 1 (`--rows`, default 1,000,000): a postgresql service is loaded through the platform
(`POST …/load/`, dump_load.py's plain SQL dump: one table, a primary key). Then, in order:
`pg_dump -Fc` of its database from this machine with the credentials call's URL; a backup
(`POST …/backups/`: a base backup by the server's node with barman-cloud, then verified on a
scratch node), timed from the call to the operation's end, and split into its parts by the
operation's progress (polled every 50 ms) and its events (taken, verified); the table dropped
and `pg_restore` of the dump into the same server; the service restored in place from the backup
(`POST …/restore/ {backup}`), timed the same way. The row count is checked after each restore.

Part 2 (`--seconds`, default 20): a second postgresql service; a table `ticks (n, at)`; a backup;
then a writer inserts `(n, clock_timestamp())` every `--interval` s (0.05), one autocommit
INSERT each, and records what was acknowledged. The moment T is the middle of the gap between
the two rows that straddle the middle of the writes. The writer goes on; once the recovery
window reaches past T (+ 2 s), the database is restored to T into a new service
(`{time: T, into: NAME}`) while the writer still writes. The restored rows must be exactly those
acknowledged with `at` <= T (printed: expected, present, missing, extra); the row before T was
acknowledged less than (T - its `at`) after it was sent, so it committed before T.

Printed besides: the writes not yet archived while writing (from the server's pg_stat_archiver and
its current WAL segment, every 0.5 s): what a node's loss would lose then, the RPO with this
archive timeout.

Run: .venv/bin/python bench/backup_restore.py [--rows 1000000] [--seconds 20] [--archive-timeout 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import psycopg  # noqa: E402
from benchlib import say  # noqa: E402
from dump_load import sql_dump, through_platform  # noqa: E402

from conpaas_common.waiting import wait_until  # noqa: E402

# --------------------------------------------------------------------------------------------
# the platform's side


def create_database(api, name: str) -> dict:
    """A postgresql service with its backup policy off (a new service is due for a scheduled
    backup at once: the bench takes its own), running."""
    response = api.post("/api/v1/services/", json={"name": name, "runtime": "postgresql"})
    if response.status_code != 201:
        raise RuntimeError(f"creating {name} answered {response.status_code}: {response.text[:300]}")
    created = response.json()
    policy = api.put(f"/api/v1/services/{created['id']}/backups/policy/", json={"enabled": False})
    if policy.status_code != 200:
        raise RuntimeError(f"turning {name}'s backup policy off answered {policy.status_code}: {policy.text[:300]}")
    operation = api.wait_operation(created["operation"], timeout=180)
    if operation["state"] != "succeeded":
        raise RuntimeError(f"creating {name} failed: {operation['error']}")
    return api.get(f"/api/v1/services/{created['id']}/").json()


def credentials(api, service_id: int) -> dict:
    return api.get(f"/api/v1/services/{service_id}/credentials/").json()


def timed_operation(api, response, what: str, timeout: float = 1800) -> tuple[float, dict, list]:
    """Follow a 202's operation to its end, polled every 50 ms: (seconds from `response`'s call,
    taken by the caller as `started` below, the operation, [(seconds, progress)] as it changed)."""
    if response.status_code != 202:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:300]}")
    operation = response.json()
    started = response.started  # set by call()
    steps, last = [], None
    deadline = started + timeout
    while operation["state"] not in ("succeeded", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not end within {timeout:.0f} s: {operation}")
        if operation.get("progress") != last:
            last = operation.get("progress")
            steps.append((time.monotonic() - started, last))
        time.sleep(0.05)
        operation = api.get(f"/api/v1/operations/{operation['id']}/").json()
    elapsed = time.monotonic() - started
    if operation["state"] != "succeeded":
        raise RuntimeError(f"{what} failed: {operation['error']}")
    return elapsed, operation, steps


def call(api, method: str, path: str, **kwargs):
    started = time.monotonic()
    response = getattr(api, method)(path, **kwargs)
    response.started = started
    return response


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def operation_events(api, service_id: int, operation_id: int) -> list[dict]:
    events = api.get(f"/api/v1/services/{service_id}/events/").json()
    return [e for e in reversed(events) if e["operation"] == operation_id]


def print_steps(operation: dict, steps: list, events: list) -> None:
    """The operation's progress as it was polled, and its events, in seconds from its start."""
    began = when(operation["started"])
    queued = (began - when(operation["created"])).total_seconds()
    say(f"    queued {queued:.2f} s; ran {(when(operation['finished']) - began).total_seconds():.2f} s")
    for seconds, progress in steps:
        say(f"    progress seen at {seconds:7.2f} s from the call: {progress}")
    for event in events:
        offset = (when(event["created"]) - began).total_seconds()
        say(f"    event at {offset:7.2f} s from its start [{event['outcome']}] {event['message'][:200]}")


def backup_parts(operation: dict, events: list) -> dict:
    """taking (start to the `taken` event), verifying (to the `verified` event), the rest."""
    began, ended = when(operation["started"]), when(operation["finished"])
    taken = next((when(e["created"]) for e in events if " taken (" in e["message"]), None)
    verified = next((when(e["created"]) for e in events if e["action"] == "backup.verify"), None)
    if taken is None or verified is None:
        return {}
    return {
        "taking": (taken - began).total_seconds(),
        "verifying": (verified - taken).total_seconds(),
        "rest": (ended - verified).total_seconds(),
    }


# --------------------------------------------------------------------------------------------
# the peers: PostgreSQL's own tools from this machine


def pg_argv(creds: dict) -> tuple[list[str], dict]:
    where = ["-h", creds["host"], "-p", str(creds["port"]), "-U", creds["user"], "-d", creds["database"]]
    return where, {**os.environ, "PGPASSWORD": creds["password"]}


def psql(creds: dict, sql: str) -> str:
    where, env = pg_argv(creds)
    done = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", *where, "-c", sql],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"psql {sql[:60]!r} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def timed_tool(argv: list[str], env: dict) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def tool_version(name: str) -> str:
    return subprocess.run([name, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()


# --------------------------------------------------------------------------------------------
# part 1: a base backup and its restore, beside pg_dump and pg_restore


def base_backup_and_restore(env, args, work: Path) -> bool:
    api = env.api
    say(f"== part 1: {args.rows:,} rows ==")
    service = create_database(api, "bench-backup")
    sid = service["id"]
    dump = work / "items.sql"
    sql_dump(dump, args.rows)
    loaded_s, _ = through_platform(api, service, dump)
    dump.unlink()
    creds = credentials(api, sid)
    server_version = psql(creds, "SHOW server_version")
    size = psql(creds, "SELECT pg_size_pretty(pg_database_size(current_database()))")
    table = psql(creds, "SELECT pg_size_pretty(pg_total_relation_size('items'))")
    say(f"loaded {args.rows:,} rows through the platform in {loaded_s:.1f} s; database {size}, table items {table} "
        f"(with its primary key); server PostgreSQL {server_version} at {creds['host']}:{creds['port']}")  # fmt: skip
    say(f"peers: {tool_version('pg_dump')}, {tool_version('pg_restore')}, run from this machine")

    where, pg_env = pg_argv(creds)
    archive = work / "items.dump"
    dump_s = timed_tool(["pg_dump", "-Fc", *where, "-f", str(archive)], pg_env)

    backup_s, backup_op, backup_steps = timed_operation(
        api, call(api, "post", f"/api/v1/services/{sid}/backups/"), "the backup"
    )
    backup_events = operation_events(api, sid, backup_op["id"])
    [backup] = api.get(f"/api/v1/services/{sid}/backups/").json()
    parts = backup_parts(backup_op, backup_events)

    psql(creds, "DROP TABLE items; CHECKPOINT")
    restore_tool_s = timed_tool(["pg_restore", "--exit-on-error", "--no-owner", *where, str(archive)], pg_env)
    after_pg_restore = int(psql(creds, "SELECT count(*) FROM items"))

    restore_s, restore_op, restore_steps = timed_operation(
        api, call(api, "post", f"/api/v1/services/{sid}/restore/", json={"backup": backup["id"]}), "the restore"
    )
    restore_events = operation_events(api, sid, restore_op["id"])
    creds_after = credentials(api, sid)
    after_restore = int(psql(creds_after, "SELECT count(*) FROM items"))

    say("backup (platform): POST …/backups/ to the operation's end")
    print_steps(backup_op, backup_steps, backup_events)
    say(f"    backup {backup['backup_id']}: {backup['size'] or 0:,} bytes, verified {backup['verified']}: "
        f"{backup['verification']}")  # fmt: skip
    say("restore (platform): POST …/restore/ {backup} (in place) to the operation's end")
    print_steps(restore_op, restore_steps, restore_events)
    before_at, after_at = f"{creds['host']}:{creds['port']}", f"{creds_after['host']}:{creds_after['port']}"
    say(
        f"    the server's address: {before_at} before the restore, {after_at} after"
        + ("" if before_at == after_at else " (CHANGED)")
    )

    queued = (when(backup_op["started"]) - when(backup_op["created"])).total_seconds()
    split = (
        f" (taking {parts['taking']:.1f} s, verifying on a scratch node {parts['verifying']:.1f} s, "
        f"the rest {parts['rest']:.1f} s; queued {queued:.1f} s)"
        if parts
        else " (parts: the taken/verified events were not found)"
    )
    say(f"figures, {args.rows:,} rows:")
    say(f"  backup   platform (base backup + verification) {backup_s:7.1f} s{split}, {backup['size'] or 0:,} bytes")
    if parts:
        say(f"           platform's base backup alone          {parts['taking']:7.1f} s")
    say(f"           pg_dump -Fc                           {dump_s:7.1f} s, {archive.stat().st_size:,} bytes")
    say(f"  restore  platform, in place from the backup    {restore_s:7.1f} s, rows after: {after_restore:,}")
    say(f"           pg_restore (table dropped first)      {restore_tool_s:7.1f} s, rows after: {after_pg_restore:,}")
    archive.unlink()
    ok = after_restore == args.rows and after_pg_restore == args.rows and backup["verified"] is True
    if not ok:
        say("  PROBLEM: a restore did not give back every row, or the backup is not verified")
    return ok


# --------------------------------------------------------------------------------------------
# part 2: point-in-time restore under steady writes


class Writer(threading.Thread):
    """One autocommit INSERT of (n, clock_timestamp()) every `interval` s; records (n, at, sent,
    acknowledged) of each acknowledged row, and the failures."""

    def __init__(self, creds: dict, interval: float):
        super().__init__(daemon=True)
        self.dsn = self.dsn_of(creds)
        self.interval = interval
        self.acknowledged: list[tuple[int, datetime, float, float]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    @staticmethod
    def dsn_of(creds: dict) -> dict:
        return {
            "host": creds["host"],
            "port": creds["port"],
            "user": creds["user"],
            "password": creds["password"],
            "dbname": creds["database"],
            "connect_timeout": 5,
        }

    def run(self) -> None:
        n, connection = 0, None
        next_at = time.monotonic()
        while not self.stopping.is_set():
            n += 1
            try:
                if connection is None:
                    connection = psycopg.connect(**self.dsn, autocommit=True)
                sent = time.monotonic()
                inserted = connection.execute("INSERT INTO ticks VALUES (%s, clock_timestamp()) RETURNING at", (n,))
                at = inserted.fetchone()[0]
                self.acknowledged.append((n, at, sent, time.monotonic()))
            except psycopg.Error as exc:
                self.failures.append(f"row {n}: {type(exc).__name__}: {str(exc).strip()[:120]}")
                if connection is not None:
                    connection.close()
                connection = None
            next_at += self.interval
            self.stopping.wait(max(0.0, next_at - time.monotonic()))
        if connection is not None:
            connection.close()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class ArchiveWatch:
    """What the loss of the server would lose at each moment: the writes since the end of the
    last archived WAL segment. Sampled from the server itself (pg_stat_archiver and the current
    segment's name): a segment's writes end when the next segment is first seen."""

    def __init__(self, creds: dict):
        self.creds = creds
        self.first_seen: dict[str, datetime] = {}
        self.exposed: list[float] = []  # seconds of writes not yet archived, at each sample
        self.segments_behind: list[int] = []
        self.archived_counts: list[tuple[datetime, int]] = []
        self.connection = None

    def sample(self) -> None:
        sql = (
            "SELECT clock_timestamp(), pg_walfile_name(pg_current_wal_lsn()), coalesce(last_archived_wal, ''),"
            " archived_count FROM pg_stat_archiver"
        )
        try:
            if self.connection is None:
                self.connection = psycopg.connect(**Writer.dsn_of(self.creds), autocommit=True)
            now, current, archived, count = self.connection.execute(sql).fetchone()
        except psycopg.Error:
            self.connection = None
            return
        self.first_seen.setdefault(current, now)
        self.archived_counts.append((now, count))
        later = [seen for name, seen in self.first_seen.items() if name > archived]
        if archived and later:
            self.exposed.append((now - min(later)).total_seconds())
            self.segments_behind.append(sum(1 for name in self.first_seen if name > archived))

    def report(self, archive_timeout: int) -> None:
        if not self.exposed:
            say("  archive: no sample")
            return
        median, p90 = benchlib.percentile(self.exposed, 50), benchlib.percentile(self.exposed, 90)
        say(f"  writes not yet archived (the server's pg_stat_archiver, every 0.5 s, {len(self.exposed)} samples): "
            f"median {median:.2f} s, p90 {p90:.2f} s, max {max(self.exposed):.2f} s; segments waiting "
            f"median {benchlib.percentile(self.segments_behind, 50)}, max {max(self.segments_behind)}")  # fmt: skip
        say(f"    each sample, s: {' '.join(f'{lag:.1f}' for lag in self.exposed)}")
        (began, first), (ended, last) = self.archived_counts[0], self.archived_counts[-1]
        seconds = (ended - began).total_seconds()
        switched = len([name for name, seen in self.first_seen.items() if began < seen <= ended])
        say(f"    over those {seconds:.1f} s: {switched} segments begun (switched), {last - first} archived "
            f"({(last - first) / seconds:.2f} a second)")  # fmt: skip
        say(f"  RPO with CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S={archive_timeout}: a segment is switched at least every "
            f"{archive_timeout} s while there are writes and archived after its upload: the loss of the node at "
            f"any moment above would have lost the writes shown (max {max(self.exposed):.2f} s)")  # fmt: skip


def window_end(api, service_id: int) -> datetime | None:
    backups = api.get(f"/api/v1/services/{service_id}/backups/").json()
    end = backups[0]["recovery_window"]["to"] if backups else None
    return when(end) if end else None


def point_in_time(env, args) -> bool:
    api = env.api
    say(f"== part 2: point-in-time restore under writes every {args.interval * 1000:.0f} ms ==")
    service = create_database(api, "bench-pitr")
    sid = service["id"]
    creds = credentials(api, sid)
    psql(creds, "CREATE TABLE ticks (n integer PRIMARY KEY, at timestamptz NOT NULL)")
    backup_s, backup_op, steps = timed_operation(
        api, call(api, "post", f"/api/v1/services/{sid}/backups/"), "the backup"
    )
    say(f"base backup of the empty table taken and verified in {backup_s:.1f} s")
    print_steps(backup_op, steps, operation_events(api, sid, backup_op["id"]))

    writer = Writer(creds, args.interval)
    writer.start()
    archive = ArchiveWatch(creds)
    try:
        began = time.monotonic()
        while time.monotonic() - began < args.seconds:
            time.sleep(0.5)
            archive.sample()
        written = list(writer.acknowledged)
        if len(written) < 10:
            raise RuntimeError(f"the writer acknowledged only {len(written)} rows: {writer.failures[:3]}")
        middle = written[0][1] + (written[-1][1] - written[0][1]) / 2
        before = max((row for row in written if row[1] <= middle), key=lambda row: row[1])
        after = min((row for row in written if row[1] > middle), key=lambda row: row[1])
        moment = before[1] + (after[1] - before[1]) / 2
        margin = (moment - before[1]).total_seconds()
        round_trip = before[3] - before[2]
        committed = "before" if round_trip < margin else "maybe after"
        say(f"T = {iso(moment)}: between row {before[0]} (at {iso(before[1])}, acknowledged "
            f"{round_trip * 1000:.1f} ms after it was sent: committed {committed} T) and row {after[0]} "
            f"(at {iso(after[1])})")  # fmt: skip

        wait_until(
            lambda: (end := window_end(api, sid)) is not None and end > moment + timedelta(seconds=2),
            timeout=120,
            interval=0.5,
            message="the recovery window to reach 2 s past T",
        )
        body = {"time": iso(moment), "into": "bench-pitr-at-t"}
        restore_s, restore_op, restore_steps = timed_operation(
            api, call(api, "post", f"/api/v1/services/{sid}/restore/", json=body), "the point-in-time restore"
        )
    finally:
        writer.stopping.set()
        writer.join(10)
    new_id = restore_op["service"]
    restored = psql(credentials(api, new_id), "SELECT coalesce(string_agg(n::text, ',' ORDER BY n), '') FROM ticks")
    present = {int(n) for n in restored.split(",") if n}
    expected = {n for n, at, _, _ in writer.acknowledged if at <= moment}
    missing, extra = sorted(expected - present), sorted(present - expected)
    say("restore (platform): POST …/restore/ {time: T, into: bench-pitr-at-t} to the operation's end")
    print_steps(restore_op, restore_steps, operation_events(api, new_id, restore_op["id"]))
    say("figures, point-in-time restore:")
    say(f"  writes: {len(writer.acknowledged):,} rows acknowledged, {len(writer.failures)} failed, "
        f"over {writer.acknowledged[-1][3] - writer.acknowledged[0][2]:.1f} s")  # fmt: skip
    say(f"  restore to T into a new service: {restore_s:.1f} s")
    which = (f"  missing {missing[:10]}" if missing else "") + (f"  extra {extra[:10]}" if extra else "")
    say(f"  rows committed up to T (expected): {len(expected):,}  present: {len(present):,}  "
        f"missing: {len(missing)}  extra: {len(extra)}{which}")  # fmt: skip
    archive.report(args.archive_timeout)
    for failure in writer.failures[:5]:
        say(f"  write failed: {failure}")
    return not missing and not extra and bool(expected)


# --------------------------------------------------------------------------------------------


def run(env, args) -> bool:
    work = Path(tempfile.mkdtemp(prefix="backup-restore-", dir=env.home))
    verdicts = []
    if not args.skip_base:
        verdicts.append(base_backup_and_restore(env, args, work))
    if not args.skip_pitr:
        verdicts.append(point_in_time(env, args))
    return all(verdicts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of part 1's table")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of writes in part 2 before T is chosen")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two writes in part 2")
    parser.add_argument("--archive-timeout", type=int, default=1, help="CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S")
    parser.add_argument(
        "--check-interval",
        type=int,
        default=10,
        help="CONPAAS_BACKUP_CHECK_INTERVAL: how often the recovery window's end is read (each read lists the "
        "store's backups: below a pass's own time the timer's tasks pile up in the queue)",
    )
    parser.add_argument("--skip-base", action="store_true", help="leave out part 1")
    parser.add_argument("--skip-pitr", action="store_true", help="leave out part 2")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    with benchlib.backup_store(args.archive_timeout, args.check_interval) as (settings, secrets):
        target = "every row back after each restore; PITR: exactly the rows committed up to T"
        settings = {"CONPAAS_MAX_UPLOAD_MB": "512", **settings}
        return benchlib.run_benchmark("backup and restore", "backup", run, args, target, settings, secrets)


if __name__ == "__main__":
    sys.exit(main())
