"""Dump load: a PostgreSQL dump and Redis pairs loaded through the platform, beside the database's
own client run directly on the same files.

A postgresql service and a redis service are created through the REST API. The PostgreSQL dump
is a plain SQL script of `--rows` rows (default 1,000,000: `CREATE TABLE` and one `COPY`); the
Redis dump is `--keys` SET commands (default 500,000) in the Redis protocol. Through the platform
each is uploaded (`POST /api/v1/services/{id}/load/`) and loaded as an operation; its time runs
from the start of the upload to the operation's end, as its user waits. Then the table is dropped
(the keys flushed) and the same file is loaded directly with `psql -f` (`redis-cli --pipe`), from
this machine, into the same server, with the credentials of `GET …/credentials/`.

Printed: rows (keys) per second each way and their ratio; target: platform >= 0.8 of direct.

Run: .venv/bin/python bench/dump_load.py [--rows 1000000] [--keys 500000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

TARGET = 0.8


def sql_dump(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("CREATE TABLE items (id integer PRIMARY KEY, name text, price numeric);\n")
        out.write("COPY items (id, name, price) FROM stdin;\n")
        for i in range(rows):
            out.write(f"{i}\titem number {i}\t{i % 1000}.{i % 100:02d}\n")
        out.write("\\.\n")


def resp_dump(path: Path, keys: int) -> None:
    with path.open("wb") as out:
        for i in range(keys):
            key, value = b"key:%d" % i, b"value %d" % i
            out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))


def through_platform(api, service: dict, path: Path) -> tuple[float, dict]:
    started = time.monotonic()
    with path.open("rb") as fh:
        response = api.post(f"/api/v1/services/{service['id']}/load/", files={"dump": (path.name, fh)}, timeout=600)
    if response.status_code != 202:
        raise RuntimeError(f"the load was refused: {response.status_code} {response.text}")
    operation = response.json()
    deadline = started + 900
    while operation["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.02)  # fine-grained: the harness's 0.2 s poll would add up to 0.2 s to a 1 s load
        operation = api.get(f"/api/v1/operations/{operation['id']}/").json()
    elapsed = time.monotonic() - started
    if operation["state"] != "succeeded":
        raise RuntimeError(f"the load failed: {operation['error']}")
    return elapsed, operation


def direct(argv: list[str], env: dict, path: Path) -> float:
    started = time.monotonic()
    with path.open("rb") as fh:
        result = subprocess.run(argv, stdin=fh, env={**os.environ, **env}, capture_output=True, timeout=900)
    elapsed = time.monotonic() - started
    if result.returncode != 0 or b"errors: 0" not in result.stdout and "redis-cli" in argv[0]:
        raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode()[-500:]} {result.stdout.decode()[-300:]}")
    return elapsed


def seconds_of(operation: dict) -> tuple[float, float]:
    """(waiting in the queue, running) of a finished operation, from its times."""
    created, started, finished = (
        datetime.fromisoformat(operation[k].replace("Z", "+00:00")) for k in ("created", "started", "finished")
    )
    return (started - created).total_seconds(), (finished - started).total_seconds()


def line(what: str, count: int, unit: str, platform_s: float, direct_s: float, tool: str, operation: dict) -> float:
    ratio = (count / platform_s) / (count / direct_s)
    queued, ran = seconds_of(operation)
    say(f"{what}: {count:,} {unit}")
    say(f"  through the platform (upload + load operation): {platform_s:6.2f} s  {count / platform_s:12,.0f} {unit}/s")
    say(f"  {tool} directly, same file, same server:{' ' * (8 - len(tool))} {direct_s:6.2f} s  "
        f"{count / direct_s:12,.0f} {unit}/s")  # fmt: skip
    say(f"  of which: upload {platform_s - queued - ran:.2f} s, queued {queued:.2f} s, load operation {ran:.2f} s "
        f"({count / ran:,.0f} {unit}/s: {direct_s / ran:.2f} of direct)")  # fmt: skip
    say(f"  ratio platform/direct: {ratio:.2f} (target >= {TARGET})")
    return ratio


def run(env, args) -> bool:
    api = env.api
    work = Path(tempfile.mkdtemp(prefix="dump-load-", dir=env.home))
    sql, resp = work / "items.sql", work / "keys.resp"
    sql_dump(sql, args.rows)
    resp_dump(resp, args.keys)
    say(f"dumps: {sql.name} {sql.stat().st_size / 2**20:.1f} MB, {resp.name} {resp.stat().st_size / 2**20:.1f} MB")

    pg = api.create_service("bench-pg", "postgresql")
    creds = api.get(f"/api/v1/services/{pg['id']}/credentials/").json()
    where = ["-h", creds["host"], "-p", str(creds["port"]), "-U", creds["user"], "-d", creds["database"]]
    pg_env = {"PGPASSWORD": creds["password"]}
    psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *where, "-f", "-"]

    def pg_empty() -> None:
        drop = ["psql", "-X", "-q", *where, "-c", "DROP TABLE IF EXISTS items; CHECKPOINT"]
        subprocess.run(drop, env={**os.environ, **pg_env}, check=True)

    kv = api.create_service("bench-kv", "redis")
    kv_creds = api.get(f"/api/v1/services/{kv['id']}/credentials/").json()
    redis_env = {"REDISCLI_AUTH": kv_creds["password"]}
    cli = ["redis-cli", "-h", kv_creds["host"], "-p", str(kv_creds["port"])]

    def kv_empty() -> None:
        subprocess.run([*cli, "FLUSHALL"], env={**os.environ, **redis_env}, check=True, capture_output=True)

    # Rounds alternate direct and platform loads into the emptied server (a machine shared with
    # other work is noisy: the best of each way is printed).
    pg_runs, kv_runs, pg_direct, kv_direct = [], [], [], []
    for _ in range(args.rounds):
        pg_empty()
        pg_direct.append(direct(psql, pg_env, sql))
        pg_empty()
        pg_runs.append(through_platform(api, pg, sql))
        assert pg_runs[-1][1]["counters"]["items"] == args.rows, pg_runs[-1][1]["counters"]
        kv_empty()
        kv_direct.append(direct([*cli, "--pipe"], redis_env, resp))
        kv_empty()
        kv_runs.append(through_platform(api, kv, resp))
        assert kv_runs[-1][1]["counters"]["items"] == args.keys, kv_runs[-1][1]["counters"]
    say(f"rounds: {args.rounds}; every time, in s: psql {[round(t, 2) for t in pg_direct]}, platform "
        f"{[round(t, 2) for t, _ in pg_runs]}; redis-cli {[round(t, 2) for t in kv_direct]}, platform "
        f"{[round(t, 2) for t, _ in kv_runs]}")  # fmt: skip
    pg_s, pg_operation = min(pg_runs, key=lambda run: run[0])
    kv_s, kv_operation = min(kv_runs, key=lambda run: run[0])
    pg_direct, kv_direct = min(pg_direct), min(kv_direct)

    ratios = [
        line("PostgreSQL", args.rows, "rows", pg_s, pg_direct, "psql", pg_operation),
        line("Redis", args.keys, "keys", kv_s, kv_direct, "redis-cli --pipe", kv_operation),
    ]
    return all(ratio >= TARGET for ratio in ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the PostgreSQL dump")
    parser.add_argument("--keys", type=int, default=500_000, help="SET commands of the Redis dump")
    parser.add_argument("--rounds", type=int, default=3, help="loads each way, alternating; the best is printed")
    parser.add_argument("--time-limit", type=float, default=900.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    settings = {"CONPAAS_MAX_UPLOAD_MB": "512"}
    return benchlib.run_benchmark(
        "dump load", "dumpload", run, args, f"platform >= {TARGET} of direct, both databases", settings
    )


if __name__ == "__main__":
    sys.exit(main())
