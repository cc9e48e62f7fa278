"""postgresql and redis: data services. A data service has no code version: its one instance is
the server, its data directory in the instance's directory (kept across restarts and agent
restarts), its port the node's, and its password the control plane's (spec field ``password``,
kept in the node's 0600 state file and in 0600 files of the instance, never logged).

The servers are run directly (``initdb``/``postgres``, ``redis-server``), as the node's user,
never Debian's cluster or system services (images/stop-services.sh disables those).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

from conpaas_common.wire import PG_DATABASE, PG_USER, REDIS_DATABASES

from .base import InstanceError, Recipe, Run, installed, why_it_failed

PG_BIN = os.environ.get("CONPAAS_PG_BIN", "/usr/lib/postgresql/15/bin")
REDIS_SERVER = "/usr/bin/redis-server"
_PASSWORD_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


def answers_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def private_file(path: str, text: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


class DataRecipe(Recipe):
    """A server with a data directory instead of a code version (``Instances`` stages nothing)."""

    archive = False
    fields = frozenset({"password"})
    concurrency = 100

    def validate(self, body: dict) -> dict:
        # The control plane generates it (secrets.token_urlsafe): a shape no config file can bend.
        password = body.get("password")
        if not isinstance(password, str) or not _PASSWORD_RE.match(password):
            raise InstanceError("password is required: 16 to 128 letters, digits, '-' or '_'", 400)
        return {"password": password}

    def ready(self, run: Run) -> bool:
        return self.accepts(run.host, run.port)

    def healthy(self, host: str, port: int, path: str) -> dict:
        ok = self.accepts(host, port)
        return {"ok": ok, "status": None, "detail": "accepts connections" if ok else "refuses connections"}

    def accepts(self, host: str, port: int) -> bool:
        return answers_tcp(host, port)

    def refuse_root(self) -> None:
        if os.geteuid() == 0:
            raise InstanceError(f"{self.name} does not run as root: run the platform with isolation (README)")


class Postgresql(DataRecipe):
    name = "postgresql"
    start_timeout = 60.0
    stop_signals = (signal.SIGINT,)  # "fast" shutdown: clients are disconnected, data is flushed

    def start(self, run: Run) -> None:
        self.refuse_root()
        initdb = installed(os.path.join(PG_BIN, "initdb"), "PostgreSQL", self.name)
        postgres = os.path.join(PG_BIN, "postgres")
        data = run.path("data")
        sockets = run.path("sockets")
        os.makedirs(sockets, mode=0o700, exist_ok=True)
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            self._initdb(run, initdb, postgres, data)
        run.spawn(
            [
                postgres,
                "-D",
                data,
                "-h",
                run.host,
                "-p",
                str(run.port),
                "-k",
                sockets,
                "-c",
                "logging_collector=off",
            ]
        )

    def _initdb(self, run: Run, initdb: str, postgres: str, data: str) -> None:
        pwfile = private_file(run.path("pwfile"), run.spec["password"] + "\n")
        try:
            with open(run.logfile, "ab") as out:
                result = subprocess.run(
                    [initdb, "-D", data, "-U", PG_USER, f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=run.env,
                    timeout=300,
                )
                if result.returncode != 0:
                    raise InstanceError(f"initdb failed: {why_it_failed(run.logfile)}")
                # Clients come over the network, each with the password.
                with open(os.path.join(data, "pg_hba.conf"), "a") as hba:
                    hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
                result = subprocess.run(
                    [postgres, "--single", "-D", data, "postgres"],
                    input=f"CREATE DATABASE {PG_DATABASE};\n".encode(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=run.env,
                    timeout=120,
                )
                if result.returncode != 0:
                    raise InstanceError(f"creating the database failed: {why_it_failed(run.logfile)}")
        finally:
            os.unlink(pwfile)

    def accepts(self, host: str, port: int) -> bool:
        """PostgreSQL's own answer (pg_isready): a server still starting or recovering already
        accepts TCP but refuses every session ("the database system is starting up")."""
        try:
            result = subprocess.run(
                [os.path.join(PG_BIN, "pg_isready"), "-q", "-h", host, "-p", str(port), "-t", "2"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0

    def marker(self, run: Run) -> str:
        return run.path("data")


class Redis(DataRecipe):
    name = "redis"

    def start(self, run: Run) -> None:
        self.refuse_root()
        server = installed(REDIS_SERVER, "redis-server", self.name)
        data = run.path("data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        # The password is in the config file, not on the command line (ps shows that).
        config = private_file(
            run.path("redis.conf"),
            f"bind {run.host}\nport {run.port}\nrequirepass {run.spec['password']}\n"
            f'dir {data}\ndaemonize no\nprotected-mode no\nappendonly yes\nsave 60 1000\nlogfile ""\n'
            f"databases {REDIS_DATABASES}\n",
        )
        run.spawn([server, config])

    def marker(self, run: Run) -> str:
        return run.path("redis.conf")
