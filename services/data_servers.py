"""Data services' servers and dumps: starting the server on the service's node, and loading a dump
into it with the database's own client (psql, pg_restore, mariadb, redis-cli --pipe) run by the worker
against the server's address, the password in the client's environment, never on a command line.

A dump's format is told by its first bytes (`dump_format`): PostgreSQL takes a plain SQL script
(loaded in one transaction: an error loads nothing) or a `pg_dump -Fc` archive; MariaDB a
`mysqldump`/`mariadb-dump` script (in one transaction too, but MariaDB commits each CREATE TABLE
at once: a data-only dump, `--no-create-info`, loads whole or not at all); Redis takes the
Redis protocol or one `key value` per line (checked whole before anything is loaded). While a
load runs, the bytes read and the rows (COPY lines and INSERTs) or keys sent are counted.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from conpaas_common.wire import MYSQL_DATABASE, MYSQL_USER, PG_DATABASE, PG_USER
from services import agent, backup_store, replication
from services.choices import Runtime
from services.errors import Conflict, ConpaasError, OperationFailed
from services.models import Node, Service

# The name of the one instance of a data service's node: its server.
SERVER = "server"
CHUNK = 4 << 20
# How often a running load writes its counters (the API, CLI and console read them).
PROGRESS_EVERY = 0.5
PG_CUSTOM_MAGIC = b"PGDMP"
GZIP_MAGIC = b"\x1f\x8b"
# redis-cli --pipe ends with this summary.
PIPE_SUMMARY = re.compile(rb"errors: (\d+), replies: (\d+)")


class DumpRefused(ConpaasError):
    """The dump is not one the service's database takes; nothing was loaded."""


def start_server(
    service: Service,
    node: Node,
    restore: dict | None = None,
    port: int | None = None,
    replica_of: dict | None = None,
    bootstrap: bool = False,
) -> int:
    """Start (or find running) the service's server on `node`; returns and records its port.

    A PostgreSQL server archives its WAL to the backup store when there is one (the RPO is
    CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S); `restore` (backup_wire.md) fills a new server from a backup.
    `port` (default: the one the node's server had) keeps its clients' URLs when it is started
    again: after a restore in place, or rebuilt on a node at the dead one's address. A new
    server with `replica_of` ({host, port}) starts as a replica of that primary. A mysql server
    joins its service's Galera cluster, or starts it again from its data with `bootstrap`."""
    spec = {"runtime": service.runtime, "password": service.password}
    if port or node.data_port:
        spec["port"] = port or node.data_port
    if replica_of is not None:
        spec["replica_of"] = replica_of
    if service.runtime == Runtime.POSTGRESQL and (cluster := replication.cluster_spec(service, node)):
        spec["cluster"] = cluster
    if service.runtime == Runtime.MYSQL and service.is_routed:
        spec.update(replication.galera_spec(service, node, bootstrap))
    if service.runtime == Runtime.POSTGRESQL and backup_store.configured():
        spec["backup"] = backup_store.for_nodes(backup_store.target_for(service))
        spec["archive_timeout_s"] = settings.CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S
    if restore is not None:
        spec["restore"] = restore
    try:
        instance = agent.client_for(node).put_instance(SERVER, spec)
    except agent.AgentError as exc:
        raise OperationFailed(f"the {service.runtime} server did not start on {node.name}: {exc.detail}") from None
    Node.objects.filter(pk=node.pk).update(data_port=instance["port"])
    node.data_port = instance["port"]
    # A Patroni member's API port (the router checks it), a Galera member's ports, and what a
    # restored server replayed to.
    kept = ("api_port", "recovery_point", "galera_port", "ist_port", "sst_port", "check_port")
    said = {k: v for k, v in (instance.get("details") or {}).items() if k in kept}
    if said:
        node.data_details = {**node.data_details, **said}
        Node.objects.filter(pk=node.pk).update(data_details=node.data_details)
    return instance["port"]


# --- formats -------------------------------------------------------------------------------


def dump_format(path: str, runtime: str) -> str:
    """`sql`, `custom`, `resp` or `pairs`; DumpRefused, saying why, for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head.strip():
        raise DumpRefused("the dump is empty")
    if head.startswith(GZIP_MAGIC):
        raise DumpRefused("the dump is compressed (gzip): upload it uncompressed")
    if runtime == Runtime.POSTGRESQL:
        if head.startswith(PG_CUSTOM_MAGIC):
            return "custom"
        if b"\0" in head or not _is_text(head):
            raise DumpRefused("the dump is neither a plain SQL script nor a pg_dump custom-format archive (-Fc)")
        return "sql"
    if runtime == Runtime.MYSQL:
        if head.startswith(PG_CUSTOM_MAGIC) or b"\0" in head or not _is_text(head):
            raise DumpRefused("the dump is not a SQL script (mysqldump or mariadb-dump, uncompressed)")
        return "mysql"
    if runtime == Runtime.REDIS:
        if head.startswith(b"*"):
            return "resp"
        check_pairs(path)
        return "pairs"
    raise DumpRefused(f"a {runtime} service takes no dump")


def _is_text(head: bytes) -> bool:
    try:
        head.decode()
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a character cut by the 4096-byte window
    return True


def check_pairs(path: str) -> None:
    """Every non-blank line is `key value` (the value is the rest of the line)."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip() and len(line.split(None, 1)) < 2:
                raise DumpRefused(
                    f"line {number} is not `key value` (nor is the dump in the Redis protocol): {line[:60]!r}"
                )


def pairs_to_resp(lines: list[bytes]) -> tuple[bytes, int]:
    """SET commands in the Redis protocol for `key value` lines; returns them and how many."""
    out, count = [], 0
    for line in lines:
        parts = line.rstrip(b"\r\n").split(None, 1)
        if len(parts) == 2:
            key, value = parts
            out.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value))
            count += 1
    return b"".join(out), count


class SqlRows:
    """Counts rows in a plain SQL script as it streams: lines of COPY … FROM stdin blocks, and
    INSERT statements (one row each: a multi-row INSERT counts once). Inside a COPY block the
    lines are counted in C (bytes.count), not one by one: a dump is mostly such blocks."""

    END = b"\n\\.\n"  # the line `\.` that ends a COPY block

    def __init__(self):
        self.rows, self.in_copy, self.rest = 0, False, b""

    def feed(self, chunk: bytes) -> None:
        data, pos = self.rest + chunk, 0
        while pos < len(data):
            if self.in_copy:
                if data.startswith(b"\\.\n", pos):
                    self.in_copy, pos = False, pos + 3
                    continue
                end = data.find(self.END, pos)
                if end < 0:
                    # Count whole lines; keep the last partial one (it may begin the end marker).
                    last = data.rfind(b"\n", pos)
                    if last < 0:
                        break
                    self.rows += data.count(b"\n", pos, last + 1)
                    pos = last + 1
                    break
                self.rows += data.count(b"\n", pos, end + 1)
                self.in_copy, pos = False, end + len(self.END)
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                break
            line = data[pos:newline]
            pos = newline + 1
            if line[:4].upper() == b"COPY" and line.rstrip().upper().endswith(b"FROM STDIN;"):
                self.in_copy = True
            else:
                self.rows += self.counted(line)
        self.rest = data[pos:]

    def counted(self, line: bytes) -> int:
        """The rows a line outside COPY blocks adds: an INSERT statement counts one."""
        return 1 if line[:11].upper() == b"INSERT INTO" else 0

    def finish(self) -> None:
        """The last line, when the script does not end with a newline."""
        if self.rest:
            self.feed(b"\n")


class MysqlRows(SqlRows):
    """mysqldump and mariadb-dump write many rows per INSERT, on its line (`VALUES (…),(…);`) or one
    tuple per line after it (mariadb-dump 10.11): each tuple counts (a value that itself holds
    `),(` or starts a line with `(` counts as one more, which a progress counter can bear). Whether
    the dump defines tables is noted too: MariaDB commits at each such statement."""

    DDL = (b"CREATE", b"DROP", b"ALTER", b"RENAME", b"TRUNCATE")

    def __init__(self):
        super().__init__()
        self.in_insert = self.defines_tables = False

    def counted(self, line: bytes) -> int:
        head = line.lstrip()[:11].upper()
        if head.startswith(self.DDL):
            self.defines_tables = True
        if head == b"INSERT INTO":
            self.in_insert = True
            rows = line.count(b"),(") + (b" VALUES (" in line.upper())
        elif self.in_insert:
            rows = line.count(b"),(") + line.lstrip().startswith(b"(")
        else:
            return 0
        if line.rstrip().endswith(b";"):
            self.in_insert = False
        return rows


# --- loading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    runtime: str
    host: str
    port: int
    password: str
    user: str = PG_USER
    database: str = PG_DATABASE

    def __post_init__(self):
        if self.runtime == Runtime.MYSQL:  # its one user and database, as a postgresql server's
            object.__setattr__(self, "user", MYSQL_USER)
            object.__setattr__(self, "database", MYSQL_DATABASE)

    @classmethod
    def of(cls, service: Service) -> "Server":
        """The service's server as its clients reach it: through its router (the primary now),
        or the server's own address for a service made before routers."""
        node = service.router_node() or service.server_node()
        if node is None:
            raise OperationFailed(f"{service.name} has no running server")
        return cls(service.runtime, node.address, node.data_port, service.password)

    def client_env(self) -> dict[str, str]:
        """The client's environment: the password where the client looks for it."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        if self.runtime == Runtime.POSTGRESQL:
            return {**env, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        if self.runtime == Runtime.MYSQL:
            return {**env, "MYSQL_PWD": self.password}
        return {**env, "REDISCLI_AUTH": self.password}

    def loader_argv(self, fmt: str) -> list[str]:
        where = ["-h", self.host, "-p", str(self.port)]
        if fmt == "sql":
            return ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *where]  # + user, db
        if fmt == "mysql":
            # One transaction (autocommit off, COMMIT at the end: the client stops at the first
            # error, and what was not committed is rolled back when it disconnects).
            return ["mariadb", "--no-defaults", "--batch", "--init-command=SET autocommit=0", "-h", self.host,
                    "-P", str(self.port), "--connect-timeout=10", "-u", self.user, self.database]  # fmt: skip
        if fmt == "custom":
            return ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", *where]
        return ["redis-cli", *where, "--pipe"]


UNIT = {"sql": "rows", "mysql": "rows", "custom": "", "resp": "keys", "pairs": "keys"}


def load(server: Server, path: str, fmt: str, report: Callable[[str, dict], None]) -> dict:
    """Load the dump at `path` into `server`; `report(text, counters)` is called every
    PROGRESS_EVERY seconds and at the end. Returns the final counters; OperationFailed with the
    client's own words when the database refused the dump."""
    argv = server.loader_argv(fmt)
    if fmt in ("sql", "custom"):
        argv += ["-U", server.user, "-d", server.database]
    total = os.path.getsize(path)
    unit = UNIT[fmt]
    counters = {"bytes_read": 0, "bytes_total": total, "items": 0, "unit": unit}
    rows = SqlRows() if fmt == "sql" else MysqlRows() if fmt == "mysql" else None

    def say() -> None:
        counted = f", {counters['items']:,} {unit} loaded" if unit else ""
        report(f"{counters['bytes_read']:,} of {total:,} bytes read{counted}", dict(counters))

    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT, env=server.client_env()
        )
        last = 0.0
        try:
            with open(path, "rb") as dump:
                rest = b""
                while chunk := dump.read(CHUNK):
                    counters["bytes_read"] += len(chunk)
                    if fmt == "pairs":
                        lines = (rest + chunk).split(b"\n")
                        rest = lines.pop()
                        chunk, count = pairs_to_resp(lines)
                        counters["items"] += count
                    elif fmt == "resp":
                        counters["items"] += chunk.count(b"\r\n*") + (counters["bytes_read"] == len(chunk))
                    elif rows is not None:
                        rows.feed(chunk)
                        counters["items"] = rows.rows
                    process.stdin.write(chunk)
                    if time.monotonic() - last >= PROGRESS_EVERY:
                        last = time.monotonic()
                        say()
                if rows is not None:
                    rows.finish()
                    counters["items"] = rows.rows
                if fmt == "mysql":
                    process.stdin.write(b"\nCOMMIT;\n")
                if fmt == "pairs" and rest:
                    chunk, count = pairs_to_resp([rest])
                    counters["items"] += count
                    process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the client stopped reading: it failed, and says why below
        finally:
            # Closed whatever happened: a client still waiting for its input would never end.
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            code = process.wait()
        output.seek(0)
        said = output.read()
    if fmt in ("resp", "pairs"):
        summary = PIPE_SUMMARY.search(said)
        if summary is None:
            raise OperationFailed(f"redis-cli --pipe failed: {last_words(said)}")
        errors, replies = int(summary.group(1)), int(summary.group(2))
        counters["items"] = replies - errors
        if errors:
            say()  # the counter: what was loaded, not what was read
            first = next((line for line in said.splitlines() if line.startswith((b"ERR", b"WRONGTYPE", b"-"))), b"")
            raise OperationFailed(
                f"{errors:,} of {replies:,} commands of the dump failed (the others were loaded): "
                f"{first.decode(errors='replace')[:300]}"
            )
    elif code != 0 and fmt == "mysql":
        error = next((line for line in said.decode(errors="replace").splitlines() if line.startswith("ERROR")), "")
        words = f"the database refused the dump: {error[:300] or last_words(said)}"
        if rows is not None and rows.defines_tables:
            report(f"the database refused the dump after {counters['bytes_read']:,} bytes", dict(counters))
            raise OperationFailed(
                f"{words}. MariaDB commits at each CREATE, DROP or ALTER statement: what the dump loaded before "
                "its last one stays (a data-only dump, mysqldump --no-create-info, loads whole or not at all)"
            )
        counters["items"] = 0  # one transaction, rolled back
        report(f"nothing loaded: the database refused the dump after {counters['bytes_read']:,} bytes", dict(counters))
        raise OperationFailed(f"{words}; nothing was loaded")
    elif code != 0:
        # One transaction, rolled back: the rows counted while reading are not in the database.
        counters["items"] = 0
        report(f"nothing loaded: the database refused the dump after {counters['bytes_read']:,} bytes", dict(counters))
        raise OperationFailed(f"the database refused the dump, nothing was loaded: {last_words(said)}")
    say()
    return counters


def last_words(output: bytes) -> str:
    lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-3:])[:500] or "no output"


def remove_dump(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def store_dump(fileobj, directory: str) -> str:
    """Copy an uploaded dump to a file of its own under `directory` (0600); returns its path."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="dump-", dir=directory)
    with os.fdopen(fd, "wb") as out:
        if hasattr(fileobj, "seek"):
            fileobj.seek(0)
        shutil.copyfileobj(fileobj, out, CHUNK)
    return path


class NotOwner(ConpaasError):
    http_status = 403


def credentials(service: Service, user) -> dict:
    """The server's address and credentials, for the service's owner alone (staff included:
    seeing a service is not reading its data)."""
    if service.owner_id != user.pk:
        raise NotOwner(f"only the owner of {service.name} may read its credentials")
    if not service.is_data:
        raise Conflict(f"{service.name} is a {service.runtime} service: it has no credentials")
    server = Server.of(service)
    named = service.runtime in (Runtime.POSTGRESQL, Runtime.MYSQL)  # a user and database; redis: index 0
    answer = {
        "url": service.connection_url(),
        "host": server.host,
        "port": server.port,
        "user": server.user if named else None,
        "password": server.password,
        "database": server.database if named else "0",
    }
    if replicas := service.replica_url():  # a replicated service: where reads reach its replicas
        answer["replica_url"] = replicas
    return answer
