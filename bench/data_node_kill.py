"""Data node kill: a PostgreSQL service's only node killed under steady writes; how long until
writes succeed again, and how many acknowledged rows the rebuilt server lost.

The platform runs with a backup store of the run's own (benchlib.backup_store: SeaweedFS on
127.0.0.1) and `CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S=--archive-timeout` (default 1: while there are
writes a WAL segment is switched at least every second, then archived by barman-cloud). A
postgresql service gets a table `ticks (n, at)` and a verified backup. A writer connects to the
service's URL (`GET …/credentials/`, read once: a rebuilt node keeps the address and the
credentials) and commits `INSERT … (n, clock_timestamp())` every `--interval` s (0.05), one
autocommit INSERT each, recording every row acknowledged and every failure; after a failure it
connects again (5 s connect timeout) at its next tick. After `--before` s every process of the
database's node gets `kill -9`, by pid (`ControlPlane.kill_node`: the node's cgroups and user
when isolated, else its process group). Self-healing should then rebuild the node from the
latest backup and the archived WAL, at the same address with the same credentials.

Measured: seconds from the kill until the first acknowledged write after it; rows acknowledged
before the kill that are absent afterwards (lost), as a count and as seconds of writes; rows
present though never acknowledged (committed while the answer was lost: not a loss); the heal's
events. If no write succeeds within `--heal-timeout` s (300), the run says so, with the service's
state, nodes and events, and fails.

Target: writes succeed again, and at most `--archive-timeout` s of acknowledged writes lost (the
last WAL segment not yet archived).

Run: .venv/bin/python bench/data_node_kill.py [--before 10] [--after 5] [--heal-timeout 300]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from backup_restore import Writer, call, create_database, credentials, operation_events, psql, timed_operation  # noqa: E402
from benchlib import say  # noqa: E402


def run(env, args) -> bool:
    api = env.api
    service = create_database(api, "bench-kill")
    sid = service["id"]
    creds = credentials(api, sid)
    psql(creds, "CREATE TABLE ticks (n integer PRIMARY KEY, at timestamptz NOT NULL)")
    backup_s, _, _ = timed_operation(api, call(api, "post", f"/api/v1/services/{sid}/backups/"), "the backup")
    say(f"service: bench-kill at {creds['host']}:{creds['port']}; a verified backup taken in {backup_s:.1f} s")
    # Its one server (the router in front of it is another node).
    [node] = [n["name"] for n in api.get(f"/api/v1/services/{sid}/nodes/").json() if n["roles"] == ["backend"]]

    writer = Writer(creds, args.interval)
    writer.start()
    recovered_after = None
    try:
        time.sleep(args.before)
        killed_at, killed_wall = time.monotonic(), datetime.now(UTC)
        acknowledged_before_kill = len(writer.acknowledged)
        killed = env.plane.kill_node(node)
        say(f"kill -9: {killed} processes of {node} at {killed_wall.isoformat()}, after "
            f"{acknowledged_before_kill} rows acknowledged")  # fmt: skip
        deadline = killed_at + args.heal_timeout
        while time.monotonic() < deadline:
            after_kill = [row for row in writer.acknowledged if row[2] > killed_at]
            if after_kill:
                recovered_after = after_kill[0][3] - killed_at
                break
            time.sleep(0.1)
        if recovered_after is not None:
            time.sleep(args.after)  # steady writes after the recovery
    finally:
        writer.stopping.set()
        writer.join(10)

    events = [e for e in api.get(f"/api/v1/services/{sid}/events/").json() if when(e["created"]) >= killed_wall]
    if recovered_after is None:
        state = api.get(f"/api/v1/services/{sid}/").json()
        nodes = api.get(f"/api/v1/services/{sid}/nodes/").json()
        say(f"NO RECOVERY: no write succeeded within {args.heal_timeout:.0f} s of the kill")
        say(f"  service state {state['state']!r}, backup_problem {state.get('backup_problem')!r}")
        say(f"  nodes: {[(n['name'], n['state'], n.get('address')) for n in nodes]}")
        now = credentials(api, sid)
        say(f"  the credentials' address: {now.get('host')}:{now.get('port')} now, {creds['host']}:{creds['port']} "
            "before the kill (the writer keeps the first)")  # fmt: skip
        say(f"  events since the kill ({len(events)}):")
        for event in reversed(events):
            say(f"    {event['created'][11:23]} [{event['outcome']}] {event['message'][:220]}")
        say(f"  the writer's last failures: {writer.failures[-3:]}")
        return False

    after_creds = credentials(api, sid)
    rows = psql(after_creds, "SELECT coalesce(string_agg(n::text, ','), '') FROM ticks")
    present = {int(n) for n in rows.split(",") if n}
    acknowledged = {n: (at, sent, acked) for n, at, sent, acked in writer.acknowledged}
    lost = sorted(n for n, (_, _, acked) in acknowledged.items() if acked < killed_at and n not in present)
    unacknowledged = sorted(present - set(acknowledged))
    kept = [acknowledged[n][0] for n in acknowledged if n in present and acknowledged[n][2] < killed_at]
    last_kept = max(kept) if kept else None
    lost_s = (max(acknowledged[n][0] for n in lost) - last_kept).total_seconds() if lost and last_kept else 0.0
    heal_ops = {e["operation"] for e in events if e["operation"]}
    say(f"writes: {len(writer.acknowledged):,} rows acknowledged, {len(writer.failures)} attempts failed, "
        f"every {args.interval * 1000:.0f} ms")  # fmt: skip
    same = (after_creds["host"], after_creds["port"]) == (creds["host"], creds["port"])
    say(
        f"address after the recovery: {after_creds['host']}:{after_creds['port']} ({'the same' if same else 'CHANGED'})"
    )
    say(f"seconds from the kill to the first acknowledged write: {recovered_after:.1f}")
    span = f" ({lost[0]}..{lost[-1]})" if lost else ""
    say(f"rows acknowledged before the kill and lost: {len(lost)}{span}, {lost_s:.2f} s of writes; "
        f"the last kept row's time: {last_kept.isoformat() if last_kept else None}")  # fmt: skip
    say(f"rows present but never acknowledged (committed, the answer lost): {len(unacknowledged)}")
    say("events since the kill:")
    for operation in sorted(heal_ops):
        for event in operation_events(api, sid, operation):
            say(f"  {event['created'][11:23]} [{event['outcome']}] {event['message'][:220]}")
    return lost_s <= args.archive_timeout


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between two writes")
    parser.add_argument("--before", type=float, default=10.0, help="seconds of writes before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of writes after the recovery")
    parser.add_argument("--heal-timeout", type=float, default=300.0, help="seconds the recovery may take")
    parser.add_argument("--archive-timeout", type=int, default=1, help="CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S")
    parser.add_argument("--check-interval", type=int, default=10, help="CONPAAS_BACKUP_CHECK_INTERVAL")
    parser.add_argument("--time-limit", type=float, default=900.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    target = f"writes succeed again; at most {args.archive_timeout} s of acknowledged writes lost"
    with benchlib.backup_store(args.archive_timeout, args.check_interval) as (settings, secrets):
        return benchlib.run_benchmark("data node kill", "datakill", run, args, target, settings, secrets)


if __name__ == "__main__":
    sys.exit(main())
