"""PostgreSQL and Redis services end to end: a real server on an isolated node, its credentials
kept out of every page and log, dumps loaded by the real clients as operations with live counters,
a broken script loading nothing. What the API refuses at once (not a dump, code versions, scaling)
and who may read the credentials: tests/api/test_data_services.py."""

import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.apps import zip_archive

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(control_plane):
    return control_plane.client("dora")


@pytest.fixture(scope="module")
def postgres(api):
    """One server for the module: its tests only add tables to it."""
    service = api.create_service("pgdata", "postgresql")
    yield service
    api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


@pytest.fixture
def redis_service(api):
    service = api.create_service("kv", "redis")
    yield service
    api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


def copy_dump(rows: int) -> bytes:
    lines = ["CREATE TABLE items (id int PRIMARY KEY, name text);", "COPY items (id, name) FROM stdin;"]
    lines += [f"{i}\titem {i}" for i in range(rows)]
    return ("\n".join([*lines, "\\.", "INSERT INTO items VALUES (-1, 'inserted');", ""])).encode()


def load(api, service, data: bytes, name="dump.sql"):
    return api.post(f"/api/v1/services/{service['id']}/load/", files={"dump": (name, data)})


def psql(creds, sql, *extra):
    env = {**os.environ, "PGPASSWORD": creds["password"]}
    argv = ["psql", "-X", "-t", "-A", "-h", creds["host"], "-p", str(creds["port"]), "-U", creds["user"]]
    return subprocess.run([*argv, *extra, "-d", creds["database"], "-c", sql], env=env, capture_output=True, text=True)


def test_it_runs_postgresql_and_keeps_the_password_out_of_every_page_and_log(api, control_plane, postgres):
    sid = postgres["id"]
    assert postgres["url"].startswith("postgres://conpaas@") and postgres["environments"]
    creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
    password = creds["password"]
    assert creds["url"] == f"postgres://conpaas:{password}@{creds['host']}:{creds['port']}/conpaas"
    assert psql(creds, "SELECT 1").stdout.strip() == "1"

    seen = [
        api.get(f"/api/v1/services/{sid}/").text,
        api.get("/api/v1/services/").text,
        api.get(f"/api/v1/services/{sid}/events/").text,
        api.get(f"/api/v1/services/{sid}/nodes/").text,
    ]
    logs = [p.read_text(errors="replace") for p in Path(control_plane.home).rglob("*.log") if p.is_file()]
    assert not [text for text in seen + logs if password in text]


# Through the workers: loads as operations, their live counters, a failed one.
@pytest.mark.broker
def test_it_loads_a_sql_dump_with_counters_a_broken_one_not_at_all_and_a_pg_dump_archive(api, postgres, tmp_path):
    sid = postgres["id"]
    response = load(api, postgres, copy_dump(50_000))
    assert response.status_code == 202, response.text
    operation = api.wait_operation(response.json())
    assert operation["state"] == "succeeded", operation["error"]
    assert operation["counters"]["items"] == 50_001 and operation["counters"]["unit"] == "rows"
    assert operation["counters"]["bytes_read"] == operation["counters"]["bytes_total"]
    assert "50,001 rows loaded" in operation["progress"]
    creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
    assert psql(creds, "SELECT count(*) FROM items").stdout.strip() == "50001"

    # An error half-way loads nothing: the whole script is one transaction.
    broken = b"CREATE TABLE more (x int);\nINSERT INTO more VALUES (1);\nINSERT INTO nowhere VALUES (2);\n"
    failed = api.wait_operation(load(api, postgres, broken).json())
    assert failed["state"] == "failed"
    assert 'relation "nowhere" does not exist' in failed["error"] and "nothing was loaded" in failed["error"]
    assert failed["counters"]["items"] == 0 and failed["progress"].startswith("nothing loaded"), failed
    assert "does not exist" in psql(creds, "SELECT * FROM more").stderr

    # pg_dump's custom format goes to pg_restore.
    archive = tmp_path / "items.dump"
    env = {**os.environ, "PGPASSWORD": creds["password"]}
    where = ["-h", creds["host"], "-p", str(creds["port"]), "-U", "conpaas", "-d", "conpaas"]
    subprocess.run(["pg_dump", "-Fc", "-t", "items", "-f", str(archive), *where], env=env, check=True)
    psql(creds, "DROP TABLE items")
    restored = api.wait_operation(load(api, postgres, archive.read_bytes(), "items.dump").json())
    assert restored["state"] == "succeeded", restored["error"]
    assert restored["params"]["format"] == "custom"
    assert psql(creds, "SELECT count(*) FROM items").stdout.strip() == "50001"


def test_it_loads_redis_pairs_and_protocol(api, redis_service):
    sid = redis_service["id"]
    assert redis_service["url"].startswith("redis://") and "@" not in redis_service["url"]
    pairs = "".join(f"key:{i} value {i}\n" for i in range(20_000)).encode()
    operation = api.wait_operation(load(api, redis_service, pairs, "keys.txt").json())
    assert operation["state"] == "succeeded", operation["error"]
    assert operation["params"]["format"] == "pairs"
    assert operation["counters"]["items"] == 20_000 and operation["counters"]["unit"] == "keys"

    resp = b"*3\r\n$3\r\nSET\r\n$5\r\nproto\r\n$2\r\nok\r\n"
    assert api.wait_operation(load(api, redis_service, resp, "keys.resp").json())["state"] == "succeeded"

    creds = api.get(f"/api/v1/services/{sid}/credentials/").json()
    assert creds["url"] == f"redis://:{creds['password']}@{creds['host']}:{creds['port']}/0"
    env = {**os.environ, "REDISCLI_AUTH": creds["password"]}
    cli = ["redis-cli", "-h", creds["host"], "-p", str(creds["port"])]
    assert subprocess.run([*cli, "GET", "key:7"], env=env, capture_output=True, text=True).stdout == "value 7\n"
    assert subprocess.run([*cli, "GET", "proto"], env=env, capture_output=True, text=True).stdout == "ok\n"
    assert subprocess.run([*cli, "DBSIZE"], env=env, capture_output=True, text=True).stdout == "20001\n"


LINKED_APP = """\
import os
import socket
from urllib.parse import parse_qs, urlsplit


def application(environ, start_response):
    # The linked server (DATABASE_URL), or any host:port given as ?to=
    to = parse_qs(environ.get("QUERY_STRING", "")).get("to")
    if not to and "DATABASE_URL" not in os.environ:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no link"]
    url = urlsplit("tcp://" + to[0]) if to else urlsplit(os.environ["DATABASE_URL"])
    try:
        socket.create_connection((url.hostname, url.port), timeout=3).close()
        body = b"connected"
    except OSError as exc:
        body = f"refused: {exc}".encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""

LINKED_MANIFEST = """\
application: linked
services:
  store:
    runtime: postgresql
  front:
    runtime: python
    links: [store]
    versions: {v1: ./front.zip}
    environments: {production: v1}
"""


def test_a_linked_service_reaches_the_server_through_the_firewall_and_others_do_not(api):
    archive = zip_archive({"wsgi.py": LINKED_APP})
    files = {"./front.zip": ("front.zip", archive)}
    applied = api.post("/api/v1/applications/apply/", data={"manifest": LINKED_MANIFEST}, files=files)
    assert applied.status_code in (200, 202), applied.text
    services = {s["name"]: s for s in api.get("/api/v1/services/").json()}
    try:
        for operation in applied.json()["operations"]:
            assert api.wait_operation(operation, timeout=180)["state"] == "succeeded"
        front = api.get(f"/api/v1/services/{services['front']['id']}/").json()
        assert requests.get(front["url"], timeout=10).text == "connected"

        # A service that does not link it reaches its router port only, not its server.
        other = api.create_service("unlinked")
        version = api.upload(other["id"], archive).json()
        assert api.deploy(other["id"], "production", version["id"])["state"] == "succeeded"
        creds = api.get(f"/api/v1/services/{services['store']['id']}/credentials/").json()
        probe = requests.get(other["url"], params={"to": f"{creds['host']}:{creds['port']}"}, timeout=10).text
        assert probe.startswith("refused"), probe
        assert (
            requests.get(front["url"], params={"to": f"{creds['host']}:{creds['port']}"}, timeout=10).text
            == "connected"
        )
    finally:
        application = next(a for a in api.get("/api/v1/applications/").json() if a["name"] == "linked")
        deleted = api.delete(f"/api/v1/applications/{application['id']}/")
        assert deleted.status_code == 202, deleted.text
        for operation in deleted.json():
            api.wait_operation(operation, timeout=120)
        if "other" in locals():
            api.wait_operation(api.delete(f"/api/v1/services/{other['id']}/").json())
