"""Backups of data services on a node (backup_wire.md): a real PostgreSQL archiving its WAL and
taking base backups with barman-cloud into a real S3 store (SeaweedFS), restored to a point in
time into a new instance; a real Redis restored from an RDB file behind a presigned URL."""

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import pytest

from conpaas_agent.runtimes.postgresql import Postgresql
from conpaas_common.procs import free_port
from conpaas_common.waiting import wait_until
from conpaas_common.wire import MAX_ARCHIVE_TIMEOUT_S, MIN_ARCHIVE_TIMEOUT_S
from tests.agent.test_data import PASSWORD, psql, redis

OTHER_PASSWORD = "other-" + "y" * 20
NO_TIMED_SWITCH = MAX_ARCHIVE_TIMEOUT_S


def location(store, prefix, bucket="backups"):
    return {
        "endpoint": store.endpoint,
        "bucket": bucket,
        "prefix": prefix,
        "access_key": store.access_key,
        "secret_key": store.secret_key,
        "region": store.region,
    }


def rows(port, password):
    return psql(port, password, "SELECT string_agg(n::text, ',' ORDER BY n) FROM t").stdout.strip()


def archived_until(agent, name):
    reply = agent.call("GET", f"/v1/instances/{name}/backups")
    assert reply.status == 200, reply.body
    return reply.json()


def test_it_backs_up_postgresql_and_restores_it_to_a_point_in_time(s3_store, data_agent):
    s3_store.client().create_bucket(Bucket="backups")
    where = location(s3_store, "svc/1")
    # No timed segment switch (each archived segment is 16 MB, and a restore fetches every one
    # through its own barman-cloud-wal-restore): the test switches where it needs WAL archived.
    spec = {"runtime": "postgresql", "password": PASSWORD, "backup": where, "archive_timeout_s": NO_TIMED_SWITCH}
    reply = data_agent.call("PUT", "/v1/instances/server", spec)
    assert reply.status == 200, reply.body
    port = reply.json()["port"]
    assert psql(port, PASSWORD, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)").returncode == 0

    reply = data_agent.call("POST", "/v1/instances/server/backup", {})
    assert reply.status == 200, reply.body
    backup = reply.json()
    assert set(backup) == {"backup_id", "begin_time", "end_time", "begin_wal", "end_wal", "size"}
    assert backup["size"] > 0 and backup["end_time"] >= backup["begin_time"]
    assert abs(datetime.fromisoformat(backup["end_time"]) - datetime.now(UTC)) < timedelta(minutes=1)

    assert psql(port, PASSWORD, "INSERT INTO t VALUES (3)").returncode == 0
    time.sleep(0.3)
    target = datetime.now(UTC)
    time.sleep(0.3)
    assert psql(port, PASSWORD, "INSERT INTO t VALUES (4)").returncode == 0
    written = datetime.now(UTC).isoformat()
    # The segment holding the last commit, closed: it reaches the store within seconds.
    assert psql(port, PASSWORD, "SELECT pg_switch_wal()").returncode == 0
    wait_until(lambda: (archived_until(data_agent, "server")["archived_until"] or "") > written, 30, 0.5, "archiving")
    # Each segment gzipped at level 6 (runtimes/wal_archive.py), not at barman's 9: a gzip
    # header's XFL byte is 2 at level 9, 4 at level 1 and 0 between.
    store = s3_store.client()
    listed = store.list_objects_v2(Bucket="backups", Prefix="svc/1/")["Contents"]
    wals = [item["Key"] for item in listed if "/wals/" in item["Key"] and item["Key"].endswith(".gz")]
    head = store.get_object(Bucket="backups", Key=wals[0], Range="bytes=0-9")["Body"].read()
    assert head[:2] == b"\x1f\x8b" and head[8] == 0, (wals[0], head)
    listed = archived_until(data_agent, "server")
    assert listed["backups"] == [backup]
    assert listed["archive_failing"] is None
    # The workers' frequent read: the archive's state alone, without listing the store.
    cheap = data_agent.call("GET", "/v1/instances/server/backups?archive_only=true").json()
    assert cheap == {"archived_until": listed["archived_until"], "archive_failing": None}
    assert data_agent.call("GET", "/v1/instances/server/backups?archive_only=yes").status == 400

    # Into a new instance, to the target time: the rows committed up to it, no later one.
    elsewhere = location(s3_store, "svc/2")
    restore = {"from": where, "backup_id": None, "target_time": target.isoformat()}
    copy = {"runtime": "postgresql", "password": OTHER_PASSWORD, "restore": restore, "backup": elsewhere}
    reply = data_agent.call("PUT", "/v1/instances/copy", {**copy, "archive_timeout_s": MIN_ARCHIVE_TIMEOUT_S})
    assert reply.status == 200, reply.body
    copy_port = reply.json()["port"]
    assert rows(copy_port, OTHER_PASSWORD) == "1,2,3"
    # Promoted and writable with the spec's password, archiving to its own location on its new
    # timeline. Its history file, archived at the promotion, holds no transaction: the archive
    # counts as reaching somewhere only once a segment of the new timeline is archived, which
    # archive_timeout brings within seconds, as on a server never restored (a restored one's
    # checkpointer could sleep past it for 5 minutes: a whole run's e2e test saw it).
    assert psql(copy_port, OTHER_PASSWORD, "INSERT INTO t VALUES (10)").returncode == 0
    wait_until(lambda: archived_until(data_agent, "copy")["archived_until"], 30, 0.5, "the copy's timed archiving")

    # To the end of the archived WAL: every row; a scratch server without backup archives nothing.
    latest = {"runtime": "postgresql", "password": OTHER_PASSWORD, "restore": {**restore, "target_time": None}}
    reply = data_agent.call("PUT", "/v1/instances/latest", latest)
    assert reply.status == 200, reply.body
    assert rows(reply.json()["port"], OTHER_PASSWORD) == "1,2,3,4"
    assert psql(reply.json()["port"], OTHER_PASSWORD, "SHOW archive_mode").stdout.strip() == "off"

    # A scratch server goes with its data.
    assert data_agent.call("DELETE", "/v1/instances/latest?purge=true").status == 204
    assert not (data_agent.home / "instances" / "latest").exists()

    # A target after the archived WAL: PostgreSQL's own words, and no data directory left.
    future = {**restore, "target_time": "2999-01-01T00:00:00+00:00"}
    reply = data_agent.call("PUT", "/v1/instances/late", {**latest, "restore": future})
    assert reply.status == 422, reply.body
    assert "recovery ended before configured recovery target was reached" in reply.json()["error"]
    assert not (data_agent.home / "instances" / "late" / "data").exists()

    assert data_agent.call("DELETE", f"/v1/instances/server/backups/{backup['backup_id']}").status == 204
    assert archived_until(data_agent, "server")["backups"] == []
    again = data_agent.call("DELETE", f"/v1/instances/server/backups/{backup['backup_id']}")
    assert again.status == 404 and again.json()["error"] == f"no backup {backup['backup_id']} in s3://backups/svc/1"

    # The keys are in no log and no answer, nor on any command line.
    assert where["secret_key"] not in (data_agent.home / "agent.log").read_text()
    for name in ("server", "copy", "late"):
        assert where["secret_key"] not in (data_agent.home / "instances" / name / "instance.log").read_text()
        answer = data_agent.call("GET", f"/v1/instances/{name}").body.decode()
        assert where["secret_key"] not in answer and PASSWORD not in answer
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    assert [line for line in ps if where["secret_key"] in line] == []


def test_it_restores_postgresql_from_nothing_with_an_error_and_no_data(s3_store, data_agent):
    s3_store.client().create_bucket(Bucket="backups")
    restore = {"from": location(s3_store, "empty"), "backup_id": None, "target_time": None}
    reply = data_agent.call(
        "PUT", "/v1/instances/db", {"runtime": "postgresql", "password": PASSWORD, "restore": restore}
    )
    assert reply.status == 422, reply.body
    assert reply.json()["error"] == "no backup in s3://backups/empty to restore"
    assert not (data_agent.home / "instances" / "db" / "data").exists()
    assert data_agent.call("GET", "/v1/status").json()["instances"] == {}


def test_it_archives_once_given_a_location_and_says_why_archiving_fails(data_agent):
    spec = {"runtime": "postgresql", "password": PASSWORD}
    assert data_agent.call("PUT", "/v1/instances/db", spec).status == 200
    reply = data_agent.call("POST", "/v1/instances/db/backup", {})
    assert reply.status == 409
    assert reply.json()["error"] == "instance db has no backup location (the spec's backup)"
    assert data_agent.call("GET", "/v1/instances/nothing/backups").status == 404
    assert data_agent.call("DELETE", "/v1/instances/db/backups/latest").status == 400
    assert data_agent.call("DELETE", "/v1/instances/db?purge=maybe").json() == {"error": "purge must be true or false"}
    port = data_agent.call("GET", "/v1/instances/db").json()["port"]
    assert psql(port, PASSWORD, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").returncode == 0

    # A location nothing answers at: the server restarts archiving, and each try fails loudly.
    nowhere = {**WHERE, "endpoint": f"http://127.0.0.1:{free_port()}"}
    reply = data_agent.call("PUT", "/v1/instances/db", {**spec, "backup": nowhere, "archive_timeout_s": 1})
    assert reply.status == 200, reply.body
    port = reply.json()["port"]
    assert rows(port, PASSWORD) == "1"
    assert psql(port, PASSWORD, "SHOW archive_mode").stdout.strip() == "on"
    assert psql(port, PASSWORD, "INSERT INTO t VALUES (2); SELECT pg_switch_wal()").returncode == 0
    record = json.loads((data_agent.home / "state.json").read_text())["instances"]["db"]
    directory = str(data_agent.home / "instances" / "db")
    state = wait_until(lambda: Postgresql().archiving_state(directory, record)[1], 60, 0.5, "a failure")
    assert state.startswith("archiving WAL 000000010000000000000001 failed (")
    assert "Could not connect to the endpoint URL" in state and WHERE["secret_key"] not in state
    reply_backup = data_agent.call("POST", "/v1/instances/db/backup", {})
    assert (
        reply_backup.status == 502 and reply_backup.json()["error"] == f"no backup while WAL archiving fails: {state}"
    )
    # An immediate stop of this server (its pid): a clean one would try the dead store again first.
    os.kill(reply.json()["pid"], signal.SIGQUIT)


WHERE = {"endpoint": "http://127.0.0.1:9", "bucket": "backups", "access_key": "AK", "secret_key": "sk"}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"backup": "s3://backups"}, "backup must be an S3 location"),
        ({"backup": {**WHERE, "endpoint": "ftp://x"}}, "backup.endpoint must be an http:// or https:// URL"),
        ({"backup": {**WHERE, "bucket": "B;rm"}}, "backup.bucket must be a bucket name"),
        ({"backup": {**WHERE, "prefix": "a/../b"}}, "backup.prefix must be a path inside the bucket"),
        ({"backup": {**WHERE, "secret_key": "a\nb"}}, "backup.secret_key must be a secret key"),
        ({"backup": WHERE, "archive_timeout_s": 0}, "archive_timeout_s must be a whole number"),
        ({"restore": {"from": WHERE, "target_time": "2026-12-07T20:00:00"}}, "restore.target_time must be"),
        ({"restore": {"from": WHERE, "backup_id": "latest"}}, "restore.backup_id must be a barman backup id"),
        ({"restore": {"from": WHERE, "when": 1}}, "restore must be an object with from"),
    ],
)
def test_it_refuses_a_bad_backup_spec(data_agent, fields, message):
    reply = data_agent.call("PUT", "/v1/instances/db", {"runtime": "postgresql", "password": PASSWORD, **fields})
    assert reply.status == 400 and message in reply.json()["error"], reply.body
    assert "sk" not in reply.json()["error"].split()
    reply = data_agent.call("PUT", "/v1/instances/c", {"runtime": "redis", "password": PASSWORD, "restore": {}})
    assert reply.status == 400 and "restore must be an object whose url" in reply.json()["error"]
    assert data_agent.call("GET", "/v1/status").json()["instances"] == {}


def test_it_restores_redis_from_an_rdb_and_keeps_it_in_the_aof(s3_store, data_agent, tmp_path):
    source = data_agent.call("PUT", "/v1/instances/source", {"runtime": "redis", "password": PASSWORD}).json()
    for index in range(20):
        assert redis(source["port"], PASSWORD, "SET", f"k{index}", f"v{index}").stdout.strip() == "OK"
    assert redis(source["port"], PASSWORD, "-n", "3", "SET", "env-copy", "x").stdout.strip() == "OK"
    rdb = tmp_path / "dump.rdb"
    env = {**os.environ, "REDISCLI_AUTH": PASSWORD}
    made = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(source["port"]), "--rdb", str(rdb)], env=env, capture_output=True
    )
    assert made.returncode == 0, made.stderr
    s3 = s3_store.client()
    s3.create_bucket(Bucket="backups")
    s3.upload_file(str(rdb), "backups", "svc/redis/b1.rdb")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "backups", "Key": "svc/redis/b1.rdb"})

    spec = {"runtime": "redis", "password": OTHER_PASSWORD, "restore": {"url": url}}
    reply = data_agent.call("PUT", "/v1/instances/copy", spec)
    assert reply.status == 200, reply.body
    port = reply.json()["port"]
    assert redis(port, OTHER_PASSWORD, "DBSIZE").stdout.strip() == "20"
    assert redis(port, OTHER_PASSWORD, "-n", "3", "GET", "env-copy").stdout.strip() == "x"
    assert redis(port, OTHER_PASSWORD, "CONFIG", "GET", "appendonly").stdout.split() == ["appendonly", "yes"]
    assert url not in (data_agent.home / "agent.log").read_text()
    # A link signed anew is the same restore: the server is left alone.
    resigned = {**spec, "restore": {"url": url + "&again=1"}}
    assert data_agent.call("PUT", "/v1/instances/copy", resigned).json()["pid"] == reply.json()["pid"]
    refused = data_agent.call("GET", "/v1/instances/copy/backups")
    assert refused.status == 409 and refused.json()["error"] == "a redis instance takes no backups through its agent"

    # A restart reads the AOF (the RDB alone would be ignored with appendonly on).
    assert data_agent.call("DELETE", "/v1/instances/copy").status == 204
    again = data_agent.call("PUT", "/v1/instances/copy", {"runtime": "redis", "password": OTHER_PASSWORD}).json()
    assert redis(again["port"], OTHER_PASSWORD, "GET", "k7").stdout.strip() == "v7"
    assert redis(again["port"], OTHER_PASSWORD, "DBSIZE").stdout.strip() == "20"


def test_it_restores_redis_from_a_missing_or_bad_rdb_with_an_error_and_no_data(s3_store, data_agent):
    s3 = s3_store.client()
    s3.create_bucket(Bucket="backups")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "backups", "Key": "none.rdb"})
    reply = data_agent.call(
        "PUT", "/v1/instances/copy", {"runtime": "redis", "password": PASSWORD, "restore": {"url": url}}
    )
    assert reply.status == 422, reply.body
    assert reply.json()["error"] == "could not download the RDB file to restore: HTTP 404 Not Found"
    assert os.listdir(data_agent.home / "instances" / "copy" / "data") == []

    s3.put_object(Bucket="backups", Key="bad.rdb", Body=b"not an RDB file")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "backups", "Key": "bad.rdb"})
    reply = data_agent.call(
        "PUT", "/v1/instances/copy", {"runtime": "redis", "password": PASSWORD, "restore": {"url": url}}
    )
    assert reply.status == 422, reply.body
    assert "Wrong signature trying to load DB from file" in reply.json()["error"]
    assert os.listdir(data_agent.home / "instances" / "copy" / "data") == []
