"""PostgreSQL and Redis for real: the settings read DATABASE_URL and CONPAAS_REDIS_URL, the tests
run on the database DATABASE_URL names, and operations travel through Redis when it is the broker.

`./run tests` runs the suite once on SQLite, its database tests once on PostgreSQL (DATABASE_URL
set) and the tests marked `broker` once more with CONPAAS_REDIS_URL set: each pass checks its own
configuration."""

import os
import runpy
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path

import dj_database_url
import pytest
from django.db import connection

from tests.apps import label_app

SETTINGS = Path(__file__).resolve().parents[1] / "conpaas_site" / "settings.py"
REDIS_URL = os.environ.get("CONPAAS_REDIS_URL")


def load_settings(monkeypatch, home: Path, **env: str) -> dict:
    """The settings module as a fresh install with exactly these variables would see it."""
    for name in ("DATABASE_URL", "CONPAAS_REDIS_URL", "CONPAAS_QUEUE_NAME", "CONPAAS_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONPAAS_HOME", str(home))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS))


def test_settings_take_postgresql_from_database_url_and_redis_as_the_broker(monkeypatch, tmp_path):
    import redis

    loaded = load_settings(
        monkeypatch,
        tmp_path,
        DATABASE_URL="postgres://conpaas:s3cret@db.example:6543/control",
        CONPAAS_REDIS_URL="redis://:pw@cache.example:6380/3",
        CONPAAS_QUEUE_NAME="site-a",
    )
    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert (database["NAME"], database["USER"], database["PASSWORD"]) == ("control", "conpaas", "s3cret")
    assert (database["HOST"], database["PORT"]) == ("db.example", 6543)
    assert database["CONN_MAX_AGE"] == 60 and database["CONN_HEALTH_CHECKS"] is True
    cluster = loaded["Q_CLUSTER"]
    assert cluster["redis"] == "redis://:pw@cache.example:6380/3" and "orm" not in cluster
    assert cluster["name"] == "site-a"
    # django-q2 hands a URL to redis-py (redis.from_url): this is the connection it makes
    pool = redis.from_url(cluster["redis"]).connection_pool
    assert {k: pool.connection_kwargs[k] for k in ("host", "port", "db", "password")} == {
        "host": "cache.example",
        "port": 6380,
        "db": 3,
        "password": "pw",
    }


def test_settings_default_to_sqlite_in_the_home_and_the_orm_broker(monkeypatch, tmp_path):
    loaded = load_settings(monkeypatch, tmp_path)
    database = loaded["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert Path(database["NAME"]) == tmp_path.resolve() / "conpaas.sqlite3"
    assert loaded["Q_CLUSTER"]["orm"] == "default" and "redis" not in loaded["Q_CLUSTER"]
    assert loaded["Q_CLUSTER"]["name"] == "conpaas"


def test_the_drivers_are_installed():
    import psycopg
    import redis

    assert psycopg.pq.__impl__ in ("binary", "c")  # psycopg[binary]: no libpq build needed
    assert redis.Redis


@pytest.mark.django_db
def test_the_tests_run_on_the_database_database_url_names():
    url = os.environ.get("DATABASE_URL")
    if url and dj_database_url.parse(url)["ENGINE"] == "django.db.backends.postgresql":
        assert connection.vendor == "postgresql"
        # pytest-django's test database beside the one named, through psycopg 3
        assert connection.settings_dict["NAME"] == "test_" + dj_database_url.parse(url)["NAME"]
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_database(), version()")
            name, version = cursor.fetchone()
        assert name == connection.settings_dict["NAME"] and version.startswith("PostgreSQL")
        assert type(connection.connection).__module__.startswith("psycopg")
    else:
        assert connection.vendor == "sqlite"


@contextmanager
def pushed_to(redis_url: str, key: str):
    """The values RPUSHed to `key` on that Redis while the block runs (seen through MONITOR)."""
    import redis

    pushed: list[str] = []
    client = redis.from_url(redis_url)
    sentinel = f"conpaas-test-end-{secrets.token_hex(4)}"
    ready = threading.Event()

    def watch():
        with client.monitor() as monitor:
            ready.set()
            while True:
                words = monitor.next_command()["command"].split(" ")
                if words[:2] == ["ECHO", sentinel]:
                    return
                if words[0].upper() == "RPUSH" and words[1:2] == [key]:
                    pushed.extend(words[2:])

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(10), "MONITOR did not start"
    try:
        yield pushed
    finally:
        client.echo(sentinel)
        watcher.join(10)
        client.close()


@pytest.mark.integration
@pytest.mark.broker
@pytest.mark.skipif(not REDIS_URL, reason="CONPAAS_REDIS_URL is not set (the Redis pass of ./run tests sets it)")
def test_operations_go_through_the_redis_broker(control_plane):
    import redis
    from django_q import core_signing
    from django_q.signing import PickleSerializer

    key = f"django_q:{control_plane.queue}:q"
    api = control_plane.client("rosa")
    with pushed_to(REDIS_URL, key) as pushed:
        service = api.create_service("broker")
        version = api.upload(service["id"], label_app("redis"), "v1").json()
        operation = api.deploy(service["id"], "production", version["id"])
    assert operation["state"] == "succeeded", operation

    # What the control plane pushed to its Redis queue, read with its own secret: the operations
    secret = (control_plane.home / "secret_key").read_text().strip()
    tasks = [
        core_signing.loads(payload, key=secret, salt=control_plane.queue, serializer=PickleSerializer)
        for payload in pushed
    ]
    assert ("workflows.tasks.run_operation", (operation["id"],)) in [(t["func"], t["args"]) for t in tasks]
    # ... and the workers took them from there: the queue is empty, the deploy ran
    assert redis.from_url(REDIS_URL).llen(key) == 0
