"""Replicated Redis and PostgreSQL end to end, on isolated nodes: scaled 1 → 3 while a writer
commits through the service's URL (no failed write), a linked app reading through
REDIS_REPLICA_URL, then kill -9 of every process of the primary's node: writes through the same
URL again within seconds, the failover an event, the dead node replaced by a new replica; with
synchronous commits, no acknowledged row lost."""

import os
import subprocess
import time

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import zip_archive
from tests.writers import PostgresWriter, RedisWriter

pytestmark = pytest.mark.integration

READER_APP = """\
import os
import socket
from urllib.parse import urlsplit


def command(*words):
    return b"*%d\\r\\n" % len(words) + b"".join(b"$%d\\r\\n%s\\r\\n" % (len(w), w.encode()) for w in words)


def ask(url, *words):
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(command("AUTH", parts.password) + command(*words))
        return sock.recv(65536).decode()


def application(environ, start_response):
    role = ask(os.environ["REDIS_REPLICA_URL"], "INFO", "replication")
    value = ask(os.environ["REDIS_REPLICA_URL"], "GET", "greeting").split("\\r\\n")[-2]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("slave " if "role:slave" in role else "master ").encode(), value.encode()]
"""

MANIFEST = """\
application: reading
services:
  cache:
    runtime: redis
  reader:
    runtime: python
    links: [cache]
    versions: {v1: ./reader.zip}
    environments: {production: v1}
"""


def nodes(api, sid):
    return api.get(f"/api/v1/services/{sid}/nodes/").json()


def test_redis_scales_under_writes_and_fails_over_behind_one_url(control_plane):
    api = control_plane.client("rita")
    files = {"./reader.zip": ("reader.zip", zip_archive({"wsgi.py": READER_APP}))}
    applied = api.post("/api/v1/applications/apply/", data={"manifest": MANIFEST}, files=files)
    assert applied.status_code in (200, 202), applied.text
    writer = None
    try:
        for operation in applied.json()["operations"]:
            assert api.wait_operation(operation, timeout=180)["state"] == "succeeded", operation
        services = {s["name"]: s for s in api.get("/api/v1/services/").json()}
        service, reader = services["cache"], services["reader"]
        sid = service["id"]
        creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
        env = {**os.environ, "REDISCLI_AUTH": creds["password"]}
        cli = ["redis-cli", "-h", creds["host"], "-p", str(creds["port"])]
        subprocess.run([*cli, "SET", "greeting", "hello"], env=env, check=True, capture_output=True)
        # One server: the replicas' URL reaches the primary.
        assert requests.get(reader["url"], timeout=10).text == "master hello"

        writer = RedisWriter(creds["url"])
        writer.start()
        wait_until(lambda: writer.acked, timeout=10, message="a first write")
        scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 3})
        assert api.wait_operation(scale.json(), timeout=180)["state"] == "succeeded"
        assert writer.failures == [], "a write failed while replicas were added"
        members = nodes(api, sid)
        assert sorted(str(n["replication_role"]) for n in members) == ["None", "primary", "replica", "replica"]
        assert api.get(f"/api/v1/services/{sid}/").json()["url"] == service["url"]
        # The linked app reads through the same replicas' URL, from a replica now.
        wait_until(
            lambda: requests.get(reader["url"], timeout=10).text == "slave hello",
            timeout=30,
            message="the reader to read hello from a replica",
        )

        primary = next(n for n in nodes(api, sid) if n["replication_role"] == "primary")
        killed_at = time.monotonic()
        assert control_plane.kill_node(primary["name"]) > 0
        back = wait_until(lambda: writer.outage(killed_at), timeout=30, interval=0.1, message="a write after the kill")
        assert back < 15, f"writes came back {back:.1f} s after the kill"

        def replaced():
            now = nodes(api, sid)
            roles = sorted(str(n["replication_role"]) for n in now)
            gone = primary["name"] not in {n["name"] for n in now}
            return gone and roles == ["None", "primary", "replica", "replica"]

        wait_until(replaced, timeout=120, interval=1, message=f"{primary['name']} to be replaced by a replica")
        said = " ".join(e["message"] for e in api.get(f"/api/v1/services/{sid}/events/").json())
        assert f"in place of {primary['name']}" in said
        assert api.get(f"/api/v1/services/{sid}/").json()["url"] == service["url"]
        assert requests.get(reader["url"], timeout=10).text == "slave hello"
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(5)
        for application in api.get("/api/v1/applications/").json():
            for operation in api.delete(f"/api/v1/applications/{application['id']}/").json():
                api.wait_operation(operation, timeout=120)


def test_postgresql_scales_and_fails_over_losing_no_synchronous_commit(control_plane):
    api = control_plane.client("pia")
    created = api.post("/api/v1/services/", json={"name": "ledger", "runtime": "postgresql", "synchronous": True})
    assert created.status_code == 201, created.text
    service = created.json()
    sid = service["id"]
    writer = None
    try:
        assert api.wait_operation(service["operation"], timeout=120)["state"] == "succeeded"
        url = api.get(f"/api/v1/services/{sid}/").json()["url"]
        creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
        writer = PostgresWriter(creds["url"])
        writer.start()
        wait_until(lambda: writer.acked, timeout=15, message="a first commit")
        scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 3})
        assert api.wait_operation(scale.json(), timeout=240)["state"] == "succeeded"
        assert writer.failures == [], "a commit failed while standbys were added"
        members = nodes(api, sid)
        assert sorted(str(n["replication_role"]) for n in members) == ["None", "primary", "standby", "standby"]
        assert all(n["lag_s"] is not None for n in members if n["replication_role"] == "standby")

        primary = next(n for n in members if n["replication_role"] == "primary")
        killed_at = time.monotonic()
        assert control_plane.kill_node(primary["name"]) > 0
        back = wait_until(lambda: writer.outage(killed_at), timeout=60, interval=0.1, message="a commit after the kill")
        assert back < 30, f"commits came back {back:.1f} s after the kill"
        wait_until(lambda: len([a for a, _ in writer.acked if a > killed_at]) > 20, timeout=30, message="more commits")
        writer.stop.set()
        writer.join(10)
        assert writer.missing() == [], "an acknowledged synchronous commit was lost"
        assert api.get(f"/api/v1/services/{sid}/").json()["url"] == url

        def replaced():
            now = nodes(api, sid)
            roles = sorted(str(n["replication_role"]) for n in now)
            return primary["name"] not in {n["name"] for n in now} and roles == [
                "None",
                "primary",
                "standby",
                "standby",
            ]

        wait_until(replaced, timeout=180, interval=1, message=f"{primary['name']} to be replaced by a standby")
        said = " ".join(e["message"] for e in api.get(f"/api/v1/services/{sid}/events/").json())
        assert f"in place of {primary['name']} (Patroni promoted it)" in said and "none is lost" in said
    finally:
        if writer is not None:
            writer.stop.set()
            writer.join(5)
        api.wait_operation(api.delete(f"/api/v1/services/{sid}/").json(), timeout=120)
