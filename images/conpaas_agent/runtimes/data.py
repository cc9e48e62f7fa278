"""postgresql and redis: data services. A data service has no code version: its one instance is
the server, its data directory in the instance's directory (kept across restarts and agent
restarts), its port the node's, and its password the control plane's (spec field ``password``,
kept in the node's 0600 state file and in 0600 files of the instance, never logged).

The servers are run directly (``initdb``/``postgres``, ``redis-server``), as the node's user,
never Debian's cluster or system services (images/stop-services.sh disables those).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta

from conpaas_common.wire import (
    ARCHIVE_TIMEOUT_S,
    MAX_ARCHIVE_TIMEOUT_S,
    MIN_ARCHIVE_TIMEOUT_S,
    PG_DATABASE,
    PG_USER,
    REDIS_DATABASES,
)

from .backups import (
    BACKUP_ID_RE,
    BACKUP_PROFILE,
    BACKUP_TIMEOUT,
    LIST_TIMEOUT,
    RESTORE_PROFILE,
    Barman,
    location,
    target_time,
    url_of,
)
from .base import InstanceError, Recipe, Run, installed, instance_environ, tail, why_it_failed

PG_BIN = os.environ.get("CONPAAS_PG_BIN", "/usr/lib/postgresql/15/bin")
REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
# Restoring a large database (a base backup, then its WAL) takes long; a PUT that restores waits.
RESTORE_TIMEOUT = 6 * 3600
STOP_TIMEOUT = 60
# A line barman logs when it fails ("2026-12-07 20:31:17,793 [9617] ERROR: …"), not a client's
# SQL error that PostgreSQL logs ("… UTC [123] ERROR:  …").
_BARMAN_ERROR_RE = re.compile(r"^\S+ [0-9:]+,[0-9]{3} \[[0-9]+\] ERROR: ")
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


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677; the control plane's
    passwords are ASCII, which SASLprep leaves as they are)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


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
    """A PostgreSQL 15 cluster; with ``backup`` it archives its WAL and takes base backups to that
    S3 location (barman-cloud, runtimes/backups.py); with ``restore`` a new instance begins as a
    copy of a base backup recovered to a point in time rather than empty."""

    name = "postgresql"
    fields = frozenset({"password", "backup", "archive_timeout_s", "restore"})
    start_timeout = 60.0
    stop_signals = (signal.SIGINT,)  # "fast" shutdown: clients are disconnected, data is flushed

    def validate(self, body: dict) -> dict:
        spec = super().validate(body)
        timeout = body.get("archive_timeout_s", ARCHIVE_TIMEOUT_S)
        low, high = MIN_ARCHIVE_TIMEOUT_S, MAX_ARCHIVE_TIMEOUT_S
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not low <= timeout <= high:
            raise InstanceError(f"archive_timeout_s must be a whole number of seconds from {low} to {high}", 400)
        if body.get("backup") is not None:
            spec.update(backup=location(body["backup"], "backup"), archive_timeout_s=timeout)
        if body.get("restore") is not None:
            spec["restore"] = self._validate_restore(body["restore"])
        return spec

    @staticmethod
    def _validate_restore(restore: object) -> dict:
        if not isinstance(restore, dict) or not set(restore) <= {"from", "backup_id", "target_time"}:
            raise InstanceError("restore must be an object with from, backup_id and target_time", 400)
        backup_id = restore.get("backup_id")
        if backup_id is not None and (not isinstance(backup_id, str) or not BACKUP_ID_RE.match(backup_id)):
            raise InstanceError("restore.backup_id must be a barman backup id such as 20261207T203000 (or null)", 400)
        return {
            "from": location(restore.get("from"), "restore.from"),
            "backup_id": backup_id,
            "target_time": target_time(restore.get("target_time")),
        }

    def start(self, run: Run) -> None:
        self.refuse_root()
        initdb = installed(os.path.join(PG_BIN, "initdb"), "PostgreSQL", self.name)
        postgres = os.path.join(PG_BIN, "postgres")
        data = run.path("data")
        sockets = run.path("sockets")
        os.makedirs(sockets, mode=0o700, exist_ok=True)
        barman = self._barman(run.dir, run.spec)
        # archive_command and restore_command run with the server's environment: the AWS config
        # file's path, never a key.
        run.env.update({k: v for k, v in barman.env.items() if k.startswith("AWS_")})
        recovery: list[str] = []
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            if run.spec.get("restore"):
                recovery = self._restore(run, barman, data)
            else:
                self._initdb(run, initdb, postgres, data)
        argv = [postgres, "-D", data, "-h", run.host, "-p", str(run.port), "-k", sockets]
        argv += ["-c", "logging_collector=off", *self._archiving(run.spec, barman), *recovery]
        server = run.spawn(argv)
        if recovery:
            try:
                self._await_promotion(run, server, data)
            except BaseException:
                _stop(server)
                shutil.rmtree(data, ignore_errors=True)
                raise

    @staticmethod
    def _barman(directory: str, spec: dict) -> Barman:
        """The instance's barman commands, its AWS config file holding the spec's locations only
        (a location taken out of the spec leaves no key behind)."""
        barman = Barman(directory, instance_environ(os.path.join(directory, "home"), {}))
        profiles = {}
        if spec.get("backup"):
            profiles[BACKUP_PROFILE] = spec["backup"]
        if spec.get("restore"):
            profiles[RESTORE_PROFILE] = spec["restore"]["from"]
        barman.write_profiles(profiles)
        return barman

    @staticmethod
    def _archiving(spec: dict, barman: Barman) -> list[str]:
        """The server's settings for WAL archiving, on its command line so that they take
        precedence over the data directory's files (a restored one holds its source's)."""
        if not spec.get("backup"):
            return ["-c", "archive_mode=off"]
        # barman-cloud-wal-archive exits non-zero when the store fails: PostgreSQL keeps the
        # segment and tries again, and pg_stat_archiver counts the failure.
        command = barman.shell_command("wal-archive", BACKUP_PROFILE, spec["backup"], ["-z"], ["%p"])
        settings = {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": command,
            "archive_timeout": str(spec["archive_timeout_s"]),
        }
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    def _restore(self, run: Run, barman: Barman, data: str) -> list[str]:
        """The spec's restore: its base backup into ``data``, ready to replay its archived WAL
        to the target; the server's settings for that. ``data`` is removed when a step fails
        (a retry starts clean)."""
        restore = run.spec["restore"]
        where = restore["from"]
        try:
            backup_id = restore["backup_id"] or self._choose_backup(barman, where, restore["target_time"])
            barman.run(barman.argv("restore", RESTORE_PROFILE, where, rest=[backup_id, data]), RESTORE_TIMEOUT)
            os.chmod(data, 0o700)  # PostgreSQL refuses a data directory others may read
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(data, "postmaster.pid"))
            open(os.path.join(data, "recovery.signal"), "w").close()
            self._let_the_agent_in(data)
        except BaseException:
            shutil.rmtree(data, ignore_errors=True)
            raise
        with open(run.logfile, "ab") as out:
            out.write(f"--- restoring backup {backup_id} of {url_of(where)}\n".encode())
        # barman exits 1 for a WAL the store does not have (the end of the archive), 2-4 when
        # the store or barman fails: PostgreSQL would take any failure for the end and promote
        # early, short of the target; a code above 125 makes it stop the recovery instead.
        fetch = barman.shell_command("wal-restore", RESTORE_PROFILE, where, [], ["%f", "%p"])
        settings = {
            "restore_command": f"{fetch}; code=$?; [ $code -le 1 ] && exit $code; exit 255",
            "recovery_target_timeline": "latest",
            "recovery_target_action": "promote",
            # No session before the end of recovery: nobody sees a half-restored database.
            "hot_standby": "off",
        }
        if restore["target_time"]:
            settings.update(recovery_target_time=restore["target_time"], recovery_target_inclusive="on")
        return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]

    @staticmethod
    def _let_the_agent_in(data: str) -> None:
        """The restored copy has its source's password, which the agent does not know: the node's
        user may connect through the instance's socket (a 0700 directory) as itself (peer), to
        give the copy the spec's password."""
        user = pwd.getpwuid(os.geteuid()).pw_name
        with open(os.path.join(data, "pg_ident.conf"), "a") as ident:
            ident.write(f"\nconpaas_node {user} {PG_USER}\n")
        hba = os.path.join(data, "pg_hba.conf")
        with open(hba) as fh:
            rules = fh.read()
        line = "local all all peer map=conpaas_node\n"
        if not rules.startswith(line):
            with open(hba, "w") as fh:
                fh.write(line + rules)

    @staticmethod
    def _choose_backup(barman: Barman, where: dict, target: str | None) -> str:
        """The newest backup of the location that ended before the target time (any, without one)."""
        backups = barman.list(RESTORE_PROFILE, where)
        if target:
            # barman gives whole seconds: a backup that ended within the target's second is not taken.
            limit = datetime.fromisoformat(target) - timedelta(seconds=1)
            backups = [b for b in backups if b["end_time"] and datetime.fromisoformat(b["end_time"]) <= limit]
        if not backups:
            before = f" that ended before {target}" if target else ""
            raise InstanceError(f"no backup in {url_of(where)}{before} to restore", 422)
        return backups[-1]["backup_id"]

    def _await_promotion(self, run: Run, server: subprocess.Popen, data: str) -> None:
        """Until the server has replayed the WAL to the target and promoted itself (it removes
        recovery.signal then) and accepts sessions; then it takes the spec's password."""
        deadline = time.monotonic() + RESTORE_TIMEOUT
        while os.path.exists(os.path.join(data, "recovery.signal")) or not self.accepts(run.host, run.port):
            if server.poll() is not None:
                raise InstanceError(f"recovery failed (code {server.returncode}): {why_it_failed(run.logfile)}")
            if time.monotonic() > deadline:
                raise InstanceError(f"recovery did not end within {RESTORE_TIMEOUT} s", 504)
            time.sleep(0.2)
        # Its SCRAM verifier, on psql's standard input: the password itself is on no command
        # line and in no statement PostgreSQL could log.
        verifier = scram_verifier(run.spec["password"])
        self._sql(run.dir, run.port, f"ALTER ROLE {PG_USER} PASSWORD '{verifier}'", None, check=True)

    @staticmethod
    def _sql(directory: str, port: int, sql: str, password: str | None, check: bool = False) -> str:
        """One statement through the instance's unix socket, sent on psql's standard input (it
        may hold a password); its output, "" when the server does not answer (unless ``check``)."""
        env = instance_environ(os.path.join(directory, "home"), {"PGCONNECT_TIMEOUT": "5"})
        if password:
            env["PGPASSWORD"] = password
        argv = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", os.path.join(directory, "sockets"), "-p", str(port), "-U", PG_USER, "-d", "postgres"]
        try:
            done = subprocess.run(argv, input=sql, env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            if check:
                raise InstanceError(f"psql failed: {done.stderr.strip() if done else 'no answer in 30 s'}")
            return ""
        return done.stdout.strip()

    # backups (POST/GET/DELETE …/backup(s)): the instance's record is its spec and port
    def _backup_location(self, name: str, record: dict) -> dict:
        if not record.get("backup"):
            raise InstanceError(f"instance {name} has no backup location (the spec's backup)", 409)
        return record["backup"]

    def take_backup(self, name: str, directory: str, record: dict) -> dict:
        where = self._backup_location(name, record)
        # A base backup is restorable only with the WAL archived up to its end: none while that fails.
        _archived, failing = self.archiving_state(directory, record)
        if failing:
            raise InstanceError(f"no backup while WAL archiving fails: {failing}", 502)
        barman = self._barman(directory, record)
        label = "conpaas-" + secrets.token_hex(6)  # finds this backup in the list afterwards
        options = ["-z", "--immediate-checkpoint", "-n", label]
        options += ["-h", os.path.join(directory, "sockets"), "-p", str(record["port"]), "-U", PG_USER]
        options += ["-d", PG_DATABASE]
        password = {"PGPASSWORD": record["password"]}
        barman.run(barman.argv("backup", BACKUP_PROFILE, where, options), BACKUP_TIMEOUT, password)
        return self._listed(barman, where, label)

    @staticmethod
    def _listed(barman: Barman, where: dict, label: str) -> dict:
        out = barman.run(barman.argv("backup-list", BACKUP_PROFILE, where, ["--format", "json"]), LIST_TIMEOUT)
        for info in json.loads(out).get("backups_list", []):
            if info.get("backup_name") == label and info.get("status") == "DONE":
                return barman.answer(info, barman.stored_sizes(BACKUP_PROFILE, where))
        raise InstanceError(f"barman-cloud-backup ended but {url_of(where)} lists no backup named {label}", 502)

    def list_backups(self, name: str, directory: str, record: dict) -> dict:
        where = self._backup_location(name, record)
        backups = self._barman(directory, record).list(BACKUP_PROFILE, where)
        archived_until, failing = self.archiving_state(directory, record)
        return {"backups": backups, "archived_until": archived_until, "archive_failing": failing}

    def archiving_state(self, directory: str, record: dict) -> tuple[str | None, str | None]:
        """pg_stat_archiver's last archived time (UTC), and the last failure's words when it
        came after it (the server's log holds barman's)."""
        sql = (
            "SELECT coalesce(to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00'), ''),"
            " failed_count, coalesce(last_failed_wal, ''),"
            " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)"
            " FROM pg_stat_archiver"
        )
        row = self._sql(directory, record["port"], sql, record["password"]).split("|")
        if len(row) != 4:
            return None, "the server does not answer: its archiving is unknown"
        archived, failed_count, failed_wal, failing = row
        if failing != "t":
            return archived or None, None
        log_lines = tail(os.path.join(directory, "instance.log"), 200).splitlines()
        words = [line for line in log_lines if _BARMAN_ERROR_RE.match(line)]
        why = f": {words[-1].strip()}" if words else ""
        return archived or None, f"archiving WAL {failed_wal} failed ({failed_count} failures so far){why}"

    def delete_backup(self, name: str, directory: str, record: dict, backup_id: str) -> None:
        if not BACKUP_ID_RE.match(backup_id):
            raise InstanceError("a backup id is a barman backup id such as 20261207T203000", 400)
        where = self._backup_location(name, record)
        barman = self._barman(directory, record)
        if backup_id not in {backup["backup_id"] for backup in barman.list(BACKUP_PROFILE, where)}:
            raise InstanceError(f"no backup {backup_id} in {url_of(where)}", 404)
        barman.run(barman.argv("backup-delete", BACKUP_PROFILE, where, ["-b", backup_id]), BACKUP_TIMEOUT)

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
    """A Redis 7 server, its data in an AOF; with ``restore`` a new instance begins with the
    keys of an RDB file (a presigned S3 URL) rather than empty."""

    name = "redis"
    fields = frozenset({"password", "restore"})

    def validate(self, body: dict) -> dict:
        spec = super().validate(body)
        restore = body.get("restore")
        if restore is not None:
            url = restore.get("url") if isinstance(restore, dict) and set(restore) == {"url"} else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 8192:
                raise InstanceError("restore must be an object whose url is the http(s) URL of an RDB file", 400)
            spec["restore"] = {"url": url}
        return spec

    def start(self, run: Run) -> None:
        self.refuse_root()
        server = installed(REDIS_SERVER, "redis-server", self.name)
        data = run.path("data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        restoring = bool(run.spec.get("restore")) and not self._holds_data(data)
        if restoring:
            self._download(run.spec["restore"]["url"], data)
        # Redis 7 ignores an RDB when appendonly is on and no AOF exists: a restore starts
        # without, then turns it on, which writes the loaded keys into a new AOF.
        self._write_config(run, appendonly=not restoring)
        process = run.spawn([server, run.path("redis.conf")])
        if restoring:
            try:
                self._turn_aof_on(run, process)
            except BaseException:
                process.kill()
                process.wait()
                self._remove_data(data)
                raise
            self._write_config(run, appendonly=True)  # what the next start reads

    @staticmethod
    def _write_config(run: Run, appendonly: bool) -> None:
        # The password is in the config file, not on the command line (ps shows that).
        private_file(
            run.path("redis.conf"),
            f"bind {run.host}\nport {run.port}\nrequirepass {run.spec['password']}\n"
            f"dir {run.path('data')}\ndaemonize no\nprotected-mode no\n"
            f'appendonly {"yes" if appendonly else "no"}\nsave 60 1000\nlogfile ""\n'
            f"databases {REDIS_DATABASES}\n",
        )

    @staticmethod
    def _holds_data(data: str) -> bool:
        return any(os.path.exists(os.path.join(data, name)) for name in ("dump.rdb", "appendonlydir"))

    @staticmethod
    def _remove_data(data: str) -> None:
        for name in os.listdir(data):
            path = os.path.join(data, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    @staticmethod
    def _download(url: str, data: str) -> None:
        """The RDB into ``data`` (dump.rdb, whole or not at all). The URL is signed: never in an
        answer or a log."""
        partial = os.path.join(data, "restore.rdb.partial")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
            reason = f"HTTP {exc.code} {exc.reason}" if isinstance(exc, urllib.error.HTTPError) else str(exc)
            if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
                reason = str(exc.reason)
            raise InstanceError(f"could not download the RDB file to restore: {reason}") from None
        os.replace(partial, os.path.join(data, "dump.rdb"))

    def _turn_aof_on(self, run: Run, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + RESTORE_TIMEOUT
        while self._cli(run, "PING") != "PONG":  # loading a large RDB answers LOADING meanwhile
            if process.poll() is not None:
                raise InstanceError(f"redis-server could not load the RDB file: {why_it_failed(run.logfile)}")
            if time.monotonic() > deadline:
                raise InstanceError(f"redis-server did not load the RDB file within {RESTORE_TIMEOUT} s", 504)
            time.sleep(0.05)
        if self._cli(run, "CONFIG", "SET", "appendonly", "yes") != "OK":
            raise InstanceError(f"redis-server refused to turn its AOF on: {why_it_failed(run.logfile)}")
        while True:
            info = dict(
                line.split(":", 1) for line in self._cli(run, "INFO", "persistence").splitlines() if ":" in line
            )
            if info.get("aof_rewrite_in_progress") == "0" and info.get("aof_rewrite_scheduled") == "0":
                if info.get("aof_last_bgrewrite_status") != "ok":
                    raise InstanceError(f"redis-server could not write its AOF: {why_it_failed(run.logfile)}")
                if info.get("aof_enabled") == "1" and os.path.isdir(run.path("data", "appendonlydir")):
                    return
            if process.poll() is not None or time.monotonic() > deadline:
                raise InstanceError(f"redis-server did not write its AOF: {why_it_failed(run.logfile)}")
            time.sleep(0.05)

    @staticmethod
    def _cli(run: Run, *command: str) -> str:
        env = instance_environ(run.path("home"), {"REDISCLI_AUTH": run.spec["password"]})
        argv = [REDIS_CLI, "-h", run.host, "-p", str(run.port), *command]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip().replace("\r", "")

    def marker(self, run: Run) -> str:
        return run.path("redis.conf")
