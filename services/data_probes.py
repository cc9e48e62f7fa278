"""What the workers ask a data server directly, with the database's own client (psql, mariadb,
redis-cli) against its address, the password in the client's environment: a PostgreSQL or
MariaDB server's rows per table, a Redis server's keys, a Redis snapshot (RDB) and a MariaDB dump. Backups use them
(workflows/backups.py); the workflow tests put stand-ins here, the one seam."""

import subprocess

from services.data_servers import Server, last_words
from services.errors import OperationFailed

TIMEOUT = 600

# psql's \gexec runs each row as a statement: one count(*) per table of the database, the names
# quoted by the server itself (format %I), never by us.
COUNT_TABLES = (
    "SELECT format('SELECT %L || chr(9) || count(*) FROM %I.%I', schemaname || '.' || tablename, schemaname, "
    "tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1\n\\gexec\n"
)
DATABASES = "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1"


def _run(argv: list[str], server: Server, stdin: str | None = None) -> str:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=server.client_env(), timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{argv[0]} did not answer within {TIMEOUT} s") from None
    if done.returncode != 0:
        raise OperationFailed(f"{argv[0]} failed: {last_words((done.stderr or done.stdout).encode())}")
    return done.stdout


def _psql(server: Server, database: str) -> list[str]:
    return ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p", str(server.port),
            "-U", server.user, "-d", database]  # fmt: skip


def pg_table_counts(server: Server) -> dict[str, int]:
    """Rows of every table of every database that takes connections, as `database/schema.table`."""
    counts = {}
    for database in _run([*_psql(server, server.database), "-c", DATABASES], server).split():
        for line in _run(_psql(server, database), server, COUNT_TABLES).splitlines():
            if "\t" in line:
                table, rows = line.rsplit("\t", 1)
                counts[f"{database}/{table}"] = int(rows)
    return counts


def _redis(server: Server) -> list[str]:
    return ["redis-cli", "-h", server.host, "-p", str(server.port)]


def redis_key_count(server: Server) -> int:
    """Keys over every database (INFO keyspace: `db0:keys=3,expires=0,…`, the DBSIZE of each)."""
    said = _run([*_redis(server), "INFO", "keyspace"], server)
    total = 0
    for line in said.splitlines():
        if line.startswith("db") and "keys=" in line:
            total += int(line.split("keys=", 1)[1].split(",", 1)[0])
    return total


def redis_snapshot(server: Server, path: str) -> None:
    """The server's RDB into `path` (redis-cli --rdb: the server's own BGSAVE, sent to us)."""
    _run([*_redis(server), "--rdb", path], server)


def _mariadb(server: Server, database: str) -> list[str]:
    return ["mariadb", "--no-defaults", "-N", "-B", "-h", server.host, "-P", str(server.port), "-u", server.user,
            "--connect-timeout=10", database]  # fmt: skip


# One count(*) per table of the service's databases (production's and the copies), the names
# quoted by the server (QUOTE of a backtick-escaped name), run as one statement each.
MYSQL_COUNTS = (
    "SELECT CONCAT('SELECT ', QUOTE(CONCAT(table_schema, '/', table_name)), ', COUNT(*) FROM `', "
    "REPLACE(table_schema, '`', '``'), '`.`', REPLACE(table_name, '`', '``'), '`;') FROM information_schema.tables "
    "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('mysql', 'sys', 'performance_schema', "
    "'information_schema') ORDER BY 1"
)


def mysql_table_counts(server: Server) -> dict[str, int]:
    """Rows of every table of every database of the server, as `database/table`."""
    statements = _run(_mariadb(server, server.database), server, MYSQL_COUNTS)
    if not statements.strip():
        return {}
    counts = {}
    for line in _run(_mariadb(server, server.database), server, statements).splitlines():
        if "\t" in line:
            table, rows = line.rsplit("\t", 1)
            counts[table] = int(rows)
    return counts


def mysql_dump(server: Server, path: str) -> None:
    """The service's database as SQL into `path`: one consistent read of every InnoDB table
    (--single-transaction takes no lock), its routines and triggers with it."""
    argv = ["mariadb-dump", "--no-defaults", "-h", server.host, "-P", str(server.port), "-u", server.user,
            "--single-transaction", "--routines", "--triggers", "--events", f"--result-file={path}",
            server.database]  # fmt: skip
    _run(argv, server)


def pg_recovery_point(server: Server) -> str:
    """The commit time of the last transaction a restored server replayed (PostgreSQL keeps it
    after promotion), ISO 8601; "" when recovery replayed none (an idle database since its base
    backup: the backup's end is the recovery point then)."""
    said = _run([*_psql(server, server.database), "-c", "SELECT pg_last_xact_replay_timestamp()"], server)
    return said.strip().replace(" ", "T", 1)
