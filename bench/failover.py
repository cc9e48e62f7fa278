"""Failover: how long writes stop when a replicated data service's primary dies, what is lost,
and what scaling 1 → 3 under writes costs.

For each case (postgresql with asynchronous and with synchronous commits, redis, mysql: a Galera
cluster from 3), on isolated nodes: a service of one server behind its router; a writer commits a
numbered row (PostgreSQL, MySQL: INSERT in its own transaction) or key (Redis, SET) every 20 ms
through the service's URL and
records each acknowledgement (tests/writers.py, reconnecting after a failure as a client library
with retries does); the service is scaled 1 → 3 under that writer; then every process of the
primary's node gets kill -9 (the harness's kill_node: Patroni, PostgreSQL or Redis, its sentinel,
the agent); a mysql service's "primary" is the member its router sends writes to.

Printed per case: failed writes during the scale and how long until the replicas were in sync;
seconds from the kill to the first acknowledged write after it (target ≤ 10 s); acknowledged
writes missing afterwards, read back through the same URL (target 0 with synchronous commits;
said as it is without); the URL before and after (unchanged).

Run: .venv/bin/python bench/failover.py [--cases postgresql,postgresql-sync,redis,mysql]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

from conpaas_common.waiting import wait_until  # noqa: E402
from tests.writers import writer_for  # noqa: E402

CASES = {
    "postgresql": ("postgresql", False),
    "postgresql-sync": ("postgresql", True),
    "redis": ("redis", False),
    "mysql": ("mysql", False),
}
# Runtimes that lose no acknowledged write whatever the service's setting: Galera certifies each
# commit on every member before it acknowledges it.
SYNCHRONOUS_ALWAYS = ("mysql",)
FAILOVER_TARGET_S = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--time-limit", type=float, default=1200.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    target = f"writes back within {FAILOVER_TARGET_S} s, 0 failed during the scale, 0 lost with synchronous commits"
    return benchlib.run_benchmark("failover", "failover", run, args, target)


def nodes(api, sid: int) -> list[dict]:
    return api.get(f"/api/v1/services/{sid}/nodes/").json()


def run_case(env, name: str, runtime: str, synchronous: bool) -> bool:
    api = env.api
    body = {"name": name, "runtime": runtime, **({"synchronous": True} if synchronous else {})}
    created = api.post("/api/v1/services/", json=body).json()
    sid = created["id"]
    if api.wait_operation(created["operation"], timeout=180)["state"] != "succeeded":
        raise RuntimeError(f"{name} did not start")
    creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
    url_before = api.get(f"/api/v1/services/{sid}/").json()["url"]
    writer = writer_for(runtime, creds["url"])
    writer.start()
    try:
        wait_until(lambda: len(writer.acked) > 50, timeout=30, message="the first writes")
        began = time.monotonic()
        scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 3}).json()
        done = api.wait_operation(scale, timeout=300)
        scaled_in = time.monotonic() - began
        if done["state"] != "succeeded":
            raise RuntimeError(f"scale failed: {done['error']}")
        during = [f for f in writer.failures if began <= f[0] <= began + scaled_in]
        said = api.get(f"/api/v1/services/{sid}/events/").json()
        scaled = [e["message"] for e in said if e["action"] == "scale" and e["outcome"] == "succeeded"]
        synced = next((m for m in scaled if "in sync" in m or "synced" in m), "")
        say(f"{name}: scale 1 → 3 under writes: {len(during)} failed writes; took {scaled_in:.1f} s; {synced}")
        time.sleep(2)  # a steady writer before the kill
        members = nodes(api, sid)
        roles = ", ".join(
            f"{n['name']} {n['replication_role']} lag {n['lag_s']}" for n in members if n["roles"] == ["backend"]
        )
        say(f"{name}: members: {roles}")
        if runtime == "mysql":  # the member the router sends writes to, as the server names itself
            taking = ask_mysql(creds["url"], "SELECT @@wsrep_node_name")
            primary = next(n for n in members if n["name"] == taking)
        else:
            primary = next(n for n in members if n["replication_role"] == "primary")
        before = len(writer.acked)
        killed_at = time.monotonic()
        killed = env.plane.kill_node(primary["name"])
        outage = wait_until(
            lambda: writer.outage(killed_at), timeout=120, interval=0.05, message="a write after the kill"
        )
        wait_until(lambda: len(writer.acked) > before + 100, timeout=60, message="100 more writes")
    finally:
        writer.stop.set()
        writer.join(10)
    missing = writer.missing()
    url_after = api.get(f"/api/v1/services/{sid}/").json()["url"]

    def replaced():
        now = nodes(api, sid)
        members = [n for n in now if n["roles"] == ["backend"]]
        return (
            primary["name"] not in {n["name"] for n in now}
            and len(members) == 3
            and all(n["replication_role"] in ("primary", "standby", "replica", "synced") for n in members)
        )

    healed = wait_until(replaced, timeout=180, interval=1) and time.monotonic() - killed_at
    said_heal = f"replaced by a new member {healed:.0f} s after the kill" if healed else "NOT replaced within 180 s"
    failed_after = len([f for f in writer.failures if f[0] > killed_at])
    say(
        f"{name}: kill -9 of {killed} processes of the primary's node {primary['name']}: first acknowledged write "
        f"{outage:.2f} s after it ({failed_after} writes failed meanwhile); {len(writer.acked)} writes acknowledged "
        f"in all, {len(missing)} of them missing afterwards{': ' + str(missing[:10]) if missing else ''}"
    )
    say(f"{name}: URL before {url_before}, after {url_after}: {'unchanged' if url_before == url_after else 'CHANGED'}")
    say(f"{name}: the dead primary's node {said_heal}")
    api.wait_operation(api.delete(f"/api/v1/services/{sid}/").json(), timeout=600)
    ok = not during and outage <= FAILOVER_TARGET_S and url_before == url_after
    return ok and (not (synchronous or runtime in SYNCHRONOUS_ALWAYS) or not missing)


def ask_mysql(url: str, sql: str):
    import pymysql

    parts = urlsplit(url)
    connection = pymysql.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password,
                                 database=parts.path.lstrip("/"), connect_timeout=5)  # fmt: skip
    with connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def run(env, args) -> bool:
    verdicts = []
    for case in args.cases.split(","):
        runtime, synchronous = CASES[case]
        verdicts.append(run_case(env, case.replace("-", ""), runtime, synchronous))
    return all(verdicts)


if __name__ == "__main__":
    raise SystemExit(main())
