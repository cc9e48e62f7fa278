"""Replicated Redis end to end, on isolated nodes: scaled 1 → 3 while a writer counts through the
service's URL (no failed write), a linked app reading through REDIS_REPLICA_URL, then kill -9 of
every process of the primary's node: writes through the same URL again within seconds, the
failover an event, the dead node replaced by a replica of the new primary."""

import os
import subprocess
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import zip_archive

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


class Writer(threading.Thread):
    """INCR through the service's URL every 20 ms, a new connection after each failure, as a
    client library with retries does; records each acknowledged value and each failure's time."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.cli = ["redis-cli", "-h", parts.hostname, "-p", str(parts.port)]
        self.env = {**os.environ, "REDISCLI_AUTH": parts.password}
        self.acked, self.failures, self.stop = [], [], threading.Event()

    def run(self):
        while not self.stop.is_set():
            done = subprocess.run([*self.cli, "INCR", "counter"], env=self.env, capture_output=True, text=True)
            answer = done.stdout.strip()
            if done.returncode == 0 and answer.isdigit():
                self.acked.append((time.monotonic(), int(answer)))
            else:
                self.failures.append((time.monotonic(), (answer + done.stderr)[:100]))
            time.sleep(0.02)


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

        writer = Writer(creds["url"])
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
        wait_until(
            lambda: any(at > killed_at for at, _ in writer.acked),
            timeout=30,
            interval=0.1,
            message="a write through the same URL after the primary's death",
        )
        back = next(at for at, _ in writer.acked if at > killed_at) - killed_at
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
