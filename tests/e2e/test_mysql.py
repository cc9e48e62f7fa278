"""A mysql service end to end, on isolated nodes: a linked PHP app reading through
DATABASE_REPLICA_URL; scaled 1 → 3 into a Galera cluster while a writer commits through the
service's URL (no failed write); kill -9 of every process of the node that takes the writes: writes
through the same URL again within seconds, no acknowledged commit lost, the dead node replaced by a
member that joins the others; then every member's server killed at once (the cluster stopped
whole): the platform starts it again from its most advanced member, and nothing acknowledged is
lost."""

import os
import signal
import time
from contextlib import suppress

import pymysql
import pytest
import requests

from conpaas_common.procs import cmdline
from conpaas_common.waiting import wait_until
from tests.apps import zip_archive
from tests.writers import MysqlWriter

pytestmark = pytest.mark.integration

READER = """\
<?php
$url = parse_url(getenv('DATABASE_REPLICA_URL'));
try {
    $db = new PDO("mysql:host={$url['host']};port={$url['port']};dbname=" . ltrim($url['path'], '/'),
                  $url['user'], $url['pass']);
    $row = $db->query("SELECT @@wsrep_node_name AS node, (SELECT word FROM greetings) AS word")->fetch();
    echo "{$row['node']} {$row['word']}";
} catch (PDOException $e) {  // before the test made its table: the health check passes all the same
    echo "not yet: ", $e->getMessage();
}
"""

MANIFEST = """\
application: shop
services:
  shopdb:
    runtime: mysql
  reader:
    runtime: php
    links: [shopdb]
    versions: {v1: ./reader.zip}
    environments: {production: v1}
"""


def nodes(api, sid):
    return [n for n in api.get(f"/api/v1/services/{sid}/nodes/").json() if n["roles"] == ["backend"]]


def ask(url, sql):
    parts = requests.utils.urlparse(url)
    connection = pymysql.connect(host=parts.hostname, port=parts.port, user=parts.username, password=parts.password,
                                 database=parts.path.lstrip("/"), autocommit=True, connect_timeout=5)  # fmt: skip
    with connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def test_mysql_becomes_a_galera_cluster_under_writes_fails_over_and_restarts_whole(control_plane):
    api = control_plane.client("maya")
    files = {"./reader.zip": ("reader.zip", zip_archive({"index.php": READER}))}
    applied = api.post("/api/v1/applications/apply/", data={"manifest": MANIFEST}, files=files)
    assert applied.status_code in (200, 202), applied.text
    writer = None
    try:
        for operation in applied.json()["operations"]:
            done = api.wait_operation(operation, timeout=180)
            assert done["state"] == "succeeded", done
        services = {s["name"]: s for s in api.get("/api/v1/services/").json()}
        service, reader = services["shopdb"], services["reader"]
        sid = service["id"]
        creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
        assert creds["url"].startswith(f"mysql://conpaas:{creds['password']}@{creds['host']}:{creds['port']}/conpaas")
        ask(creds["url"], "CREATE TABLE greetings (word varchar(20))")
        ask(creds["url"], "INSERT INTO greetings VALUES ('hello')")
        [first] = nodes(api, sid)
        assert requests.get(reader["url"], timeout=10).text == f"{first['name']} hello"

        writer = MysqlWriter(creds["url"])
        writer.start()
        wait_until(lambda: writer.acked, timeout=15, message="a first commit")
        scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 3})
        scaled = api.wait_operation(scale.json(), timeout=240)
        assert scaled["state"] == "succeeded", scaled
        assert writer.failures == [], "a commit failed while members joined"
        assert sorted(str(n["replication_role"]) for n in nodes(api, sid)) == ["synced"] * 3
        # The reader's URL spreads over the synced members (each checked by the router first).
        seen = set()

        def spread():
            seen.add(requests.get(reader["url"], timeout=10).text.split()[0])
            return len(seen) == 3

        wait_until(spread, timeout=30, interval=0.2, message="reads from every member")
        assert seen == {n["name"] for n in nodes(api, sid)}

        taking = ask(creds["url"], "SELECT @@wsrep_node_name")[0][0]
        killed_at = time.monotonic()
        assert control_plane.kill_node(taking) > 0
        # How soon is bench/failover.py's figure (4.2 s); here, that they come back at all.
        wait_until(lambda: writer.outage(killed_at), timeout=60, interval=0.1, message="a commit after the kill")

        def replaced():
            now = nodes(api, sid)
            gone = taking not in {n["name"] for n in now}
            return gone and sorted(str(n["replication_role"]) for n in now) == ["synced"] * 3

        wait_until(replaced, timeout=180, interval=1, message=f"{taking} to be replaced by a member that joins")
        said = " ".join(e["message"] for e in api.get(f"/api/v1/services/{sid}/events/").json())
        assert f"in place of {taking}" in said and "none is lost" in said

        # Stopped whole: every member's server killed at once, their nodes alive.
        pids = [pid for n in nodes(api, sid) for pid in control_plane.node_pids(n["name"])]
        servers = [pid for pid in pids if "mariadbd" in cmdline(pid)]
        assert len(servers) == 3
        stopped_at = time.monotonic()
        for pid in servers:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: writer.outage(stopped_at), timeout=120, interval=0.2, message="commits after the restart")

        def bootstrapped():
            return "galera.bootstrap" in {e["action"] for e in api.get(f"/api/v1/services/{sid}/events/").json()}

        wait_until(bootstrapped, timeout=30, message="the bootstrap's event")
        wait_until(lambda: len(writer.acked) > len([a for a in writer.acked if a[0] <= stopped_at]) + 20, timeout=30)
        writer.stop.set()
        writer.join(10)
        assert writer.missing() == [], "an acknowledged commit was lost"
        assert api.get(f"/api/v1/services/{sid}/").json()["url"] == service["url"]
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(5)
        for application in api.get("/api/v1/applications/").json():
            for operation in api.delete(f"/api/v1/applications/{application['id']}/").json():
                api.wait_operation(operation, timeout=120)
