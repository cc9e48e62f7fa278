"""Copies of a data service's production database, on its own server, for preview environments: a
preview then writes to its copy, never to production data. PostgreSQL: a copy is another database
of the same cluster (`copy_<n>`), filled by pg_dump of production piped into psql (production is in
use by the app, so CREATE DATABASE … TEMPLATE, which needs it idle, cannot be used). MySQL: the
same with mariadb-dump --single-transaction into mariadb (a Galera cluster replicates the copy to
every member). Redis: a copy is another database index (1 to 15), filled by COPY of every key of db
0. Copy names are made here (`copy_name`), never taken from users; every function checks the name's
shape again, so that production's own database can never be dropped or flushed through them. The
password travels only in the clients' environment or connection arguments, never on a command line
or in an error.
"""

import re
import subprocess
import tempfile

import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry

from conpaas_common.wire import REDIS_DATABASES
from services.choices import Runtime
from services.data_servers import Server, last_words
from services.errors import Conflict, OperationFailed
from services.models import Service, data_url

PG_COPY = re.compile(r"^copy_[1-9][0-9]{0,5}$")
# The runtimes whose copies are databases named `copy_<n>` beside production's.
NAMED_DATABASES = (Runtime.POSTGRESQL, Runtime.MYSQL)
PG_PREFIX = "copy_"
# Keys copied per round trip to Redis.
REDIS_BATCH = 1000
CONNECT_TIMEOUT = 10


def copy_name(service: Service, taken: set[str]) -> str:
    """A free copy name on `service`'s server: `copy_<n>` for PostgreSQL, a database index ("1"
    to "15") for Redis. `taken`: the names other copies of this service hold. Conflict when
    Redis has no free index left."""
    if service.runtime in NAMED_DATABASES:
        number = 1
        while f"{PG_PREFIX}{number}" in taken:
            number += 1
        return f"{PG_PREFIX}{number}"
    if service.runtime == Runtime.REDIS:
        for index in range(1, REDIS_DATABASES):
            if str(index) not in taken:
                return str(index)
        raise Conflict(
            f"{service.name} has no free database for another copy: a redis service holds "
            f"{REDIS_DATABASES - 1} copies at most (drop the copy of an environment first)"
        )
    raise Conflict(f"{service.name} is a {service.runtime} service: it has no database to copy")


def make_copy(service: Service, name: str) -> None:
    """Copy the production database of `service` into copy `name`, replacing whatever it held.
    OperationFailed, with the client's last words, when the server is not running or the copy
    failed (then no PostgreSQL copy database is left behind)."""
    _check(service, name)
    server = Server.of(service)
    if service.runtime == Runtime.POSTGRESQL:
        _pg_copy(server, name)
    elif service.runtime == Runtime.MYSQL:
        _mysql_copy(server, name)
    else:
        _redis_copy(server, name)


def drop_copy(service: Service, name: str) -> None:
    """Remove copy `name`; dropping what is not there, or on a server that is gone, does nothing."""
    _check(service, name)
    if service.server_node() is None:
        return  # no running server: nothing to drop (a deleted service's data goes with its node)
    server = Server.of(service)
    if service.runtime == Runtime.POSTGRESQL:
        _pg_drop(server, name)
    elif service.runtime == Runtime.MYSQL:
        _mysql_admin(server, f"DROP DATABASE IF EXISTS `{name}`")
    else:
        _redis_flush(server, name)


def copy_url(service: Service, name: str, with_password: bool = True) -> str | None:
    """Like Service.connection_url, naming copy `name`: what a preview environment's instances
    get. None until the server runs."""
    _check(service, name)
    node = service.router_node() or service.server_node()  # the router: the primary, after a failover too
    if node is None:
        return None
    password = service.password if with_password else ""
    return data_url(service.runtime, node.address, node.data_port, password, database=name)


def _check(service: Service, name: str) -> None:
    """A copy name is one `copy_name` makes: never production's database, never anything else."""
    if service.runtime in NAMED_DATABASES:
        valid = bool(PG_COPY.match(name))
    elif service.runtime == Runtime.REDIS:
        valid = name.isascii() and name.isdigit() and 1 <= int(name) < REDIS_DATABASES and name == str(int(name))
    else:
        raise Conflict(f"{service.name} is a {service.runtime} service: it has no database to copy")
    if not valid:
        raise ValueError(f"{name!r} is not a copy name of a {service.runtime} service")


def _piped(dump_argv: list[str], load_argv: list[str], server: Server) -> bytes | None:
    """`dump | load` with the server's password in both clients' environment: None when both
    succeeded, else the words of the one that failed (the loader's when it stopped first: the
    dump then fails too, on its next write)."""
    env = server.client_env()
    with tempfile.TemporaryFile() as dump_said, tempfile.TemporaryFile() as load_said:
        dump = subprocess.Popen(dump_argv, stdout=subprocess.PIPE, stderr=dump_said, env=env)
        try:
            load = subprocess.run(load_argv, stdin=dump.stdout, stdout=load_said, stderr=subprocess.STDOUT, env=env)
        finally:
            # The loader gone, the dump ends on its next write (SIGPIPE) instead of waiting forever.
            dump.stdout.close()
            dumped = dump.wait()
        if load.returncode == 0 and dumped == 0:
            return None
        failed = load_said if load.returncode != 0 else dump_said
        failed.seek(0)
        return failed.read()


# --- PostgreSQL ----------------------------------------------------------------------------


def _pg_admin(server: Server, statement: sql.Composable) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE refuse to run in one),
    connected to production's database: the one database sure to exist."""
    try:
        with psycopg.connect(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            dbname=server.database,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
        ) as connection:
            connection.execute(statement)
    except psycopg.Error as exc:
        raise OperationFailed(f"the {server.runtime} server refused: {_said(exc, server)}") from None


def _pg_drop(server: Server, name: str) -> None:
    # FORCE: a preview's instances may still be connected to the copy.
    _pg_admin(server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _pg_copy(server: Server, name: str) -> None:
    _pg_drop(server, name)
    _pg_admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    where = ["-h", server.host, "-p", str(server.port), "-U", server.user]
    dump = ["pg_dump", "--no-password", *where, "-d", server.database]
    said = _piped(dump, ["psql", "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", *where, "-d", name], server)
    if said is None:
        return
    said = _masked(_psql_error(said), server)
    _pg_drop(server, name)  # no half-made copy is left behind
    raise OperationFailed(f"copying the production database into {name} failed: {said}")


def _psql_error(output: bytes) -> str:
    """psql's ERROR line and where it happened (its CONTEXT), else the output's last lines: the
    error comes before the lines that quote the statement."""
    lines = output.decode(errors="replace").splitlines()
    error = next((line for line in lines if "ERROR:" in line), None)
    if error is None:
        return last_words(output)
    context = [line.strip() for line in lines if line.startswith(("CONTEXT:", "COPY ", "SQL "))]
    return " | ".join([error[error.index("ERROR:") :], *context])[:500]


# --- MySQL ---------------------------------------------------------------------------------


def _mysql_argv(server: Server, tool: str, database: str) -> list[str]:
    where = ["-h", server.host, "-P", str(server.port), "-u", server.user]
    timeout = ["--connect-timeout=10"] if tool == "mariadb" else []  # mariadb-dump has no such option
    return [tool, "--no-defaults", *where, *timeout, database]


def _mysql_admin(server: Server, statement: str) -> None:
    """One statement on production's database (the one sure to exist); `statement` names only a
    copy name `_check` let through."""
    done = subprocess.run(
        _mysql_argv(server, "mariadb", server.database),
        input=statement,
        capture_output=True,
        text=True,
        env=server.client_env(),
        timeout=120,
    )
    if done.returncode != 0:
        said = _masked(last_words(done.stderr.encode()), server)
        raise OperationFailed(f"the {server.runtime} server refused: {said}")


def _mysql_copy(server: Server, name: str) -> None:
    _mysql_admin(server, f"DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`")
    dump = _mysql_argv(server, "mariadb-dump", server.database)
    dump[-1:-1] = ["--single-transaction", "--routines", "--triggers"]
    said = _piped(dump, _mysql_argv(server, "mariadb", name), server)
    if said is None:
        return
    said = _masked(last_words(said), server)
    _mysql_admin(server, f"DROP DATABASE IF EXISTS `{name}`")  # no half-made copy is left behind
    raise OperationFailed(f"copying the production database into {name} failed: {said}")


# --- Redis ---------------------------------------------------------------------------------


def _redis(server: Server, index: int) -> redis.Redis:
    return redis.Redis(
        host=server.host,
        port=server.port,
        password=server.password,
        db=index,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=60,
        # No retries: a wrong password is no passing trouble, and the operation may be re-run.
        retry=Retry(NoBackoff(), 0),
    )


def _redis_flush(server: Server, name: str) -> None:
    try:
        with _redis(server, int(name)) as client:
            client.flushdb()
    except redis.RedisError as exc:
        raise OperationFailed(f"the redis server refused: {_said(exc, server)}") from None


def _redis_copy(server: Server, name: str) -> None:
    _redis_flush(server, name)
    try:
        with _redis(server, 0) as production:
            batch = []
            for key in production.scan_iter(count=REDIS_BATCH):
                batch.append(key)
                if len(batch) == REDIS_BATCH:
                    _copy_keys(production, batch, int(name))
                    batch = []
            _copy_keys(production, batch, int(name))
    except redis.RedisError as exc:
        raise OperationFailed(f"copying the production database into {name} failed: {_said(exc, server)}") from None


def _copy_keys(production: redis.Redis, keys: list[bytes], index: int) -> None:
    # COPY keeps the key's time to live; a key that expired since SCAN saw it is simply not copied.
    pipeline = production.pipeline(transaction=False)
    for key in keys:
        pipeline.copy(key, key, destination_db=index, replace=True)
    pipeline.execute()


def _said(exc: Exception, server: Server) -> str:
    return _masked(" ".join(str(exc).split()) or type(exc).__name__, server)[:500]


def _masked(text: str, server: Server) -> str:
    """The password hidden, should a client or driver ever echo it."""
    return text.replace(server.password, "***") if server.password else text
