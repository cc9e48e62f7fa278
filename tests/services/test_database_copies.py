"""Copies of a data service's production database for preview environments, on real servers (a
PostgreSQL and a Redis run by an agent as an unprivileged user, as on a node): a copy holds
production's data, writing to it leaves production alone, a re-run replaces it, a drop removes it,
and no error ever shows the password."""

import psycopg
import pytest
import redis

from conpaas_common.procs import free_port
from services.choices import NodeState
from services.data_servers import start_server
from services.database_copies import copy_name, copy_url, drop_copy, make_copy
from services.errors import Conflict, OperationFailed
from tests.agent.agent_helpers import SECRET, unprivileged_agent
from tests.factories import NodeFactory, ServiceFactory

pytestmark = pytest.mark.django_db

PASSWORD = "copies-" + "y" * 24


@pytest.fixture(scope="module")
def postgres_agent():
    with unprivileged_agent() as agent:
        yield agent


@pytest.fixture(scope="module")
def redis_agent():
    with unprivileged_agent() as agent:
        yield agent


def serve(runtime: str, agent):
    """A data service whose server runs on `agent` (started once per module: the agent finds it
    running for the next tests)."""
    service = ServiceFactory(runtime=runtime, password=PASSWORD)
    node = NodeFactory(service=service, address="127.0.0.1", agent_port=agent.port, secret=SECRET)
    start_server(service, node)
    return service


@pytest.fixture
def postgres(postgres_agent):
    service = serve("postgresql", postgres_agent)
    with psycopg.connect(service.connection_url(), autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        for (name,) in connection.execute("SELECT datname FROM pg_database WHERE datname LIKE 'copy%'").fetchall():
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        connection.execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text);"
            "INSERT INTO items (name) SELECT 'item ' || i FROM generate_series(1, 1000) i"
        )
    return service


@pytest.fixture
def redis_service(redis_agent):
    service = serve("redis", redis_agent)
    with redis.from_url(service.connection_url()) as production:
        production.flushall()
        production.mset({f"key:{i}": f"value {i}" for i in range(2500)})  # more than one batch
        production.hset("hash", mapping={"a": "1", "b": "2"})
        production.rpush("list", "x", "y", "z")
        production.set("expiring", "soon", ex=300)
    return service


def pg(url: str, query: str):
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(query)
        return cursor.fetchall() if cursor.description else None


def stop_server(service):
    service.nodes.update(state=NodeState.DESTROYED)


# --- names ---------------------------------------------------------------------------------


def test_it_names_a_postgresql_copy_it_has_not_given_yet():
    service = ServiceFactory(runtime="postgresql")
    assert copy_name(service, set()) == "copy_1"
    assert copy_name(service, {"copy_1", "copy_3"}) == "copy_2"


def test_it_names_a_redis_copy_by_a_free_index_and_refuses_when_none_is_left():
    service = ServiceFactory(runtime="redis", name="kv")
    assert copy_name(service, set()) == "1"
    assert copy_name(service, {str(i) for i in range(1, 15)}) == "15"
    with pytest.raises(Conflict, match="kv has no free database for another copy: a redis service holds 15 copies"):
        copy_name(service, {str(i) for i in range(1, 16)})


def test_it_has_no_copy_for_a_service_without_a_database():
    with pytest.raises(Conflict, match="web is a python service: it has no database to copy"):
        copy_name(ServiceFactory(runtime="python", name="web"), set())


@pytest.mark.parametrize(
    "runtime, name",
    [
        ("postgresql", "conpaas"),  # production's own database
        ("postgresql", "postgres"),
        ("postgresql", 'copy_1"; DROP DATABASE conpaas; --'),
        ("postgresql", "copy_01"),
        ("redis", "0"),  # production's own index
        ("redis", "16"),
        ("redis", "01"),
        ("redis", "-1"),
        ("redis", "²"),
    ],
)
@pytest.mark.parametrize("call", [make_copy, drop_copy, copy_url])
def test_it_refuses_a_name_it_did_not_make(runtime, name, call):
    service = ServiceFactory(runtime=runtime)
    with pytest.raises(ValueError, match=f"is not a copy name of a {runtime} service"):
        call(service, name)


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.integration
def test_it_copies_postgresql_production_into_a_database_of_its_own(postgres):
    name = copy_name(postgres, set())
    make_copy(postgres, name)

    node = postgres.server_node()
    url = copy_url(postgres, name)
    assert url == f"postgres://conpaas:{PASSWORD}@127.0.0.1:{node.data_port}/copy_1"
    assert copy_url(postgres, name, with_password=False) == f"postgres://conpaas@127.0.0.1:{node.data_port}/copy_1"
    assert pg(url, "SELECT count(*), max(name) FROM items") == [(1000, "item 999")]

    # The copy and production go their own ways.
    production = postgres.connection_url()
    pg(url, "DELETE FROM items WHERE id > 10; INSERT INTO items (name) VALUES ('preview only')")
    pg(production, "INSERT INTO items (name) VALUES ('production only')")
    assert pg(production, "SELECT count(*) FROM items") == [(1001,)]
    assert pg(url, "SELECT count(*) FROM items") == [(11,)]
    # The sequence was copied too: the copy's next id follows production's at copy time.
    assert pg(url, "SELECT id FROM items WHERE name = 'preview only'") == [(1001,)]


@pytest.mark.integration
def test_a_rerun_replaces_the_postgresql_copy_even_while_a_preview_is_connected(postgres):
    make_copy(postgres, "copy_2")
    url = copy_url(postgres, "copy_2")
    pg(url, "CREATE TABLE preview_only (x int)")
    pg(postgres.connection_url(), "TRUNCATE items; INSERT INTO items (name) VALUES ('fresh')")

    preview = psycopg.connect(url, autocommit=True)  # an instance of the preview, idle in its connection
    try:
        make_copy(postgres, "copy_2")
        with pytest.raises(psycopg.OperationalError, match="terminating connection"):
            preview.execute("SELECT 1")  # it reconnects to the new copy
    finally:
        preview.close()

    assert pg(url, "SELECT name FROM items") == [("fresh",)]
    assert pg(url, "SELECT to_regclass('preview_only')") == [(None,)]


@pytest.mark.integration
def test_it_drops_a_postgresql_copy_and_dropping_again_does_nothing(postgres):
    make_copy(postgres, "copy_1")
    url = copy_url(postgres, "copy_1")
    drop_copy(postgres, "copy_1")
    with pytest.raises(psycopg.OperationalError, match='database "copy_1" does not exist'):
        pg(url, "SELECT 1")
    drop_copy(postgres, "copy_1")
    assert pg(postgres.connection_url(), "SELECT count(*) FROM items") == [(1000,)]

    stop_server(postgres)
    drop_copy(postgres, "copy_1")  # no server, nothing to drop
    assert copy_url(postgres, "copy_1") is None


@pytest.mark.integration
def test_a_failed_postgresql_copy_says_why_and_leaves_no_copy(postgres):
    # A CHECK that reads another table without naming its schema: pg_dump's script runs with an
    # empty search_path, so the copy's rows fail it (a real dump that does not restore).
    pg(
        postgres.connection_url(),
        "CREATE TABLE limits (low int); INSERT INTO limits VALUES (0);"
        "CREATE FUNCTION above_low(x int) RETURNS bool LANGUAGE sql IMMUTABLE"
        " AS 'SELECT x > (SELECT low FROM limits)';"
        "CREATE TABLE checked (x int CHECK (above_low(x))); INSERT INTO checked VALUES (5)",
    )
    with pytest.raises(OperationFailed) as failed:
        make_copy(postgres, "copy_1")
    message = str(failed.value)
    assert message.startswith("copying the production database into copy_1 failed: ")
    assert 'relation "limits" does not exist' in message
    assert PASSWORD not in message
    assert pg(postgres.connection_url(), "SELECT count(*) FROM pg_database WHERE datname = 'copy_1'") == [(0,)]


@pytest.mark.integration
def test_a_postgresql_copy_fails_clearly_without_a_server_or_with_a_wrong_password(postgres):
    postgres.password = "wrong-" + "z" * 20
    for call in (make_copy, drop_copy):
        with pytest.raises(OperationFailed, match="password authentication failed") as failed:
            call(postgres, "copy_1")
        assert postgres.password not in str(failed.value)

    postgres.password = PASSWORD
    postgres.nodes.update(data_port=free_port())  # the node says running, nothing answers
    with pytest.raises(OperationFailed, match="the postgresql server refused: .*refused") as failed:
        drop_copy(postgres, "copy_1")
    assert PASSWORD not in str(failed.value)

    stop_server(postgres)
    with pytest.raises(OperationFailed, match="has no running server"):
        make_copy(postgres, "copy_1")


# --- Redis ---------------------------------------------------------------------------------


@pytest.mark.integration
def test_it_copies_redis_db_0_into_another_index(redis_service):
    url = copy_url(redis_service, "3")
    node = redis_service.server_node()
    assert url == f"redis://:{PASSWORD}@127.0.0.1:{node.data_port}/3"
    with redis.from_url(url) as copy:
        copy.set("stale", "from an earlier copy")
    make_copy(redis_service, "3")

    with redis.from_url(url) as copy, redis.from_url(redis_service.connection_url()) as production:
        assert copy.dbsize() == production.dbsize() == 2503
        assert copy.get("key:2499") == b"value 2499"
        assert copy.hgetall("hash") == {b"a": b"1", b"b": b"2"}
        assert copy.lrange("list", 0, -1) == [b"x", b"y", b"z"]
        assert 0 < copy.ttl("expiring") <= 300
        assert copy.get("stale") is None

        # Writes to the copy leave production alone, and the other way round.
        copy.set("key:1", "changed in preview")
        copy.delete("hash")
        production.set("new", "production only")
        assert production.get("key:1") == b"value 1" and production.hlen("hash") == 2
        assert copy.get("new") is None

        make_copy(redis_service, "3")  # a re-run replaces the copy
        assert copy.get("key:1") == b"value 1" and copy.get("new") == b"production only"
        assert copy.dbsize() == production.dbsize()


@pytest.mark.integration
def test_it_flushes_a_redis_copy_on_drop_and_dropping_again_does_nothing(redis_service):
    make_copy(redis_service, "15")
    drop_copy(redis_service, "15")
    with redis.from_url(copy_url(redis_service, "15")) as copy:
        assert copy.dbsize() == 0
    drop_copy(redis_service, "15")
    with redis.from_url(redis_service.connection_url()) as production:
        assert production.dbsize() == 2503

    stop_server(redis_service)
    drop_copy(redis_service, "15")
    assert copy_url(redis_service, "15") is None


@pytest.mark.integration
def test_a_redis_copy_fails_clearly_with_a_wrong_password_or_no_server(redis_service):
    redis_service.password = "wrong-" + "z" * 20
    for call in (make_copy, drop_copy):
        with pytest.raises(OperationFailed, match="the redis server refused: .*(invalid|WRONGPASS)") as failed:
            call(redis_service, "1")
        assert redis_service.password not in str(failed.value)

    redis_service.password = PASSWORD
    stop_server(redis_service)
    with pytest.raises(OperationFailed, match="has no running server"):
        make_copy(redis_service, "1")
