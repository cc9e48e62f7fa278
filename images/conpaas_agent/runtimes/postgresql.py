"""postgresql: a PostgreSQL 15 cluster per node (data.py: what data services share); with a
backup location it archives its WAL and takes base backups there (barman-cloud, backups.py), with
a restore a new instance begins as a base backup recovered to a point in time."""

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
import subprocess
import time
from datetime import datetime, timedelta

from conpaas_common.procs import cmdline, pid_alive
from conpaas_common.wire import ARCHIVE_TIMEOUT_S, MAX_ARCHIVE_TIMEOUT_S, MIN_ARCHIVE_TIMEOUT_S, PG_DATABASE, PG_USER

from . import patroni
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
from .base import InstanceError, Run, installed, instance_environ, tail, why_it_failed
from .data import RESTORE_TIMEOUT, DataRecipe, private_file

PG_BIN = os.environ.get("CONPAAS_PG_BIN", "/usr/lib/postgresql/15/bin")
STOP_TIMEOUT = 60
# What Patroni writes in a member's postgresql.conf that a copy restored elsewhere must not keep.
PATRONI_ONLY_SETTINGS = ("recovery_target", "hba_file", "ident_file", "listen_addresses", "port", "unix_socket_")
# A line barman logs when it fails ("2026-12-07 20:31:17,793 [9617] ERROR: …"), not a client's
# SQL error that PostgreSQL logs ("… UTC [123] ERROR:  …").
_BARMAN_ERROR_RE = re.compile(r"^\S+ [0-9:]+,[0-9]{3} \[[0-9]+\] ERROR: ")


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677; the control plane's
    passwords are ASCII, which SASLprep leaves as they are)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def as_options(settings: dict[str, str]) -> list[str]:
    """Settings as the server's command line takes them."""
    return [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class Postgresql(DataRecipe):
    """A PostgreSQL 15 cluster; with ``backup`` it archives its WAL and takes base backups to that
    S3 location (barman-cloud, runtimes/backups.py); with ``restore`` a new instance begins as a
    copy of a base backup recovered to a point in time rather than empty."""

    name = "postgresql"
    fields = frozenset({"password", "port", "backup", "archive_timeout_s", "restore", "cluster"})
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
        if body.get("cluster") is not None:
            spec["cluster"] = patroni.validate_cluster(body["cluster"])
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
        clustered = bool(run.spec.get("cluster"))
        if not os.path.exists(os.path.join(data, "PG_VERSION")):
            if run.spec.get("restore"):
                recovery = self._restore(run, barman, data)
            elif not clustered:  # Patroni makes a member's data: initdb, or a clone of the primary
                self._initdb(run, initdb, postgres, data)
        if clustered and not recovery:
            patroni.spawn(run, PG_BIN, self._archiving(run.spec, barman))
            return
        argv = [postgres, "-D", data, "-h", run.host, "-p", str(run.port), "-k", sockets]
        argv += ["-c", "logging_collector=off"]
        argv += [*as_options(self._archiving(run.spec, barman)), *recovery]
        server = run.spawn(argv)
        if recovery:
            try:
                self._await_promotion(run, server, data)
            except BaseException:
                _stop(server)
                shutil.rmtree(data, ignore_errors=True)
                raise
            if clustered:
                # Restored and promoted by a plain server, then handed to Patroni as its data.
                _stop(server)
                run.processes.remove(server)
                patroni.spawn(run, PG_BIN, self._archiving(run.spec, barman))

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
    def _archiving(spec: dict, barman: Barman) -> dict[str, str]:
        """The server's settings for WAL archiving, on its command line (or in Patroni's config)
        so that they take precedence over the data directory's files (a restored one holds its
        source's). A replicated service's members all have them: the primary archives, and a
        standby promoted goes on where it stopped."""
        if not spec.get("backup"):
            return {"archive_mode": "off"}
        # barman-cloud-wal-archive exits non-zero when the store fails: PostgreSQL keeps the
        # segment and tries again, and pg_stat_archiver counts the failure.
        command = barman.shell_command("wal-archive", BACKUP_PROFILE, spec["backup"], ["-z"], ["%p"])
        settings = {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": command,
            "archive_timeout": str(spec["archive_timeout_s"]),
        }
        return settings

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
            self._forget_patroni_settings(data)
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
        return as_options(settings)

    @staticmethod
    def _forget_patroni_settings(data: str) -> None:
        """A base backup of a Patroni member holds the postgresql.conf Patroni wrote: its source's
        files (hba_file), and every recovery target set empty, which PostgreSQL counts as a second
        target beside the restore's. The restored server reads its own settings; Patroni, when it
        takes the server over, writes the file again."""
        path = os.path.join(data, "postgresql.conf")
        with open(path) as fh:
            lines = fh.readlines()
        if not any(line.startswith("# It will be overwritten by Patroni") for line in lines):
            return
        kept = [line for line in lines if not line.startswith(PATRONI_ONLY_SETTINGS)]
        with open(path, "w") as fh:
            fh.writelines(kept)

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
        # The checkpointer may have planned its sleep while recovery was still in progress, when
        # archive_timeout does not count: it would then switch no segment (archive nothing) for
        # checkpoint_timeout, 5 minutes. A checkpoint wakes it, and it plans by archive_timeout.
        self._sql(run.dir, run.port, "CHECKPOINT", None, check=True)
        # What it replayed to, said with the instance (details): a Patroni member's server is
        # started again by Patroni, which forgets it.
        point = self._sql(run.dir, run.port, "SELECT pg_last_xact_replay_timestamp()", None, check=True)
        with open(run.path("recovery_point"), "w") as fh:
            fh.write(point.replace(" ", "T", 1))

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
        came after it (the server's log holds barman's). Only a WAL segment's archiving counts: a
        timeline's history file (archived at a promotion) or a backup label holds no transaction,
        and counting it would put the recovery window's end past WAL the store does not have."""
        sql = (
            "SELECT CASE WHEN last_archived_wal ~ '^[0-9A-F]{24}$' THEN"
            " to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US+00:00') ELSE '' END,"
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

    def reconfigure(self, directory: str, host: str, record: dict, spec: dict) -> dict | None:
        """A member whose cluster's synchronous mode alone changed takes it without a restart:
        Patroni's settings are the whole cluster's. Nor does a spec that now names the REST API
        port the member already listens on (a new member's first spec has none) restart it: that
        restart stopped a leader just after a failover, and its standbys promoted one another."""
        before, after = record.get("cluster"), spec.get("cluster")
        if not before or not after:
            return None
        if after.get("api_port") not in (None, api_port_of_record(directory)):
            return None
        fields = ("runtime", "password", "backup", "archive_timeout_s")
        if any(record.get(f) != spec.get(f) for f in fields) or {**before, "synchronous": 0, "api_port": 0} != {
            **after,
            "synchronous": 0,
            "api_port": 0,
        }:
            return None
        if before["synchronous"] != after["synchronous"]:
            patroni.set_synchronous(host, api_port_of_record(directory), spec["password"], after["synchronous"])
        return record.get("details") or {}

    def _bootstrapped(self, directory: str, port: int, record: dict) -> bool:
        sql = f"SELECT 1 FROM pg_database WHERE datname = '{PG_DATABASE}'"
        return self._sql(directory, port, sql, record["password"]) == "1"

    def stop_signals_for(self, record: dict) -> tuple[signal.Signals, ...]:
        # Patroni stops its PostgreSQL on SIGTERM (fast shutdown), then itself.
        return (signal.SIGTERM,) if record.get("cluster") else self.stop_signals

    def lingering_pids(self, directory: str, record: dict) -> list[int]:
        """Patroni's PostgreSQL runs in a session of its own: when Patroni did not stop it (it
        was killed), its postmaster, named by the data directory's postmaster.pid."""
        data = os.path.join(directory, "data")
        try:
            with open(os.path.join(data, "postmaster.pid")) as fh:
                pid = int(fh.readline())
        except (OSError, ValueError):
            return []
        return [pid] if pid_alive(pid) and data in cmdline(pid) else []

    def ready(self, run: Run) -> bool:
        """A member is up when its Patroni answers (it may be cloning the primary: the control
        plane waits for it to be in sync); a lone server when it takes sessions."""
        if run.spec.get("cluster"):
            return patroni.answers(run.host, api_port_of_record(run.dir))
        return self.accepts(run.host, run.port)

    def details(self, run: Run) -> dict:
        details = {"api_port": api_port_of_record(run.dir)} if run.spec.get("cluster") else {}
        if run.spec.get("restore"):
            with contextlib.suppress(OSError), open(run.path("recovery_point")) as fh:
                details["recovery_point"] = fh.read()
        return details

    def replication(self, directory: str, host: str, port: int, record: dict) -> dict:
        """A member's role as Patroni says it (`primary`, `standby`), and a standby's lag: the
        seconds since the last transaction it replayed was committed, 0 when it has replayed all
        it received (an idle primary commits nothing: no lag grows)."""
        if not record.get("cluster"):
            return {"role": "primary", "lag_s": 0}
        status, said = patroni.api(host, api_port_of_record(directory), "/patroni")
        role = patroni.ROLES.get(said.get("role", ""))
        if status is None or role is None:
            return {"role": None, "detail": "Patroni does not answer" if status is None else said.get("state", "")}
        if role == "primary" and (said.get("state") != "running" or not self._bootstrapped(directory, port, record)):
            # A new cluster's primary serves once Patroni's bootstrap made the service's database.
            return {"role": None, "detail": f"bootstrapping ({said.get('state')})"}
        answer = {"role": role, "state": said.get("state"), "timeline": said.get("timeline")}
        if role == "standby":
            sql = (
                "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 ELSE"
                " coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), -1) END,"
                " (SELECT status FROM pg_stat_wal_receiver)"
            )
            row = self._sql(directory, port, sql, record["password"]).split("|")
            streaming = len(row) == 2 and row[1] == "streaming"
            answer.update(link="up" if streaming else "down", in_sync=streaming and said.get("state") == "running")
            # The standby synchronous commits wait for: the one Patroni would promote.
            answer["sync_standby"] = bool(said.get("sync_standby"))
            answer["lag_s"] = round(float(row[0]), 1) if streaming and row[0] not in ("", "-1") else None
        else:
            answer["lag_s"] = 0
        return answer

    def marker(self, run: Run) -> str:
        return run.path("data")


def api_port_of_record(directory: str) -> int:
    """The member's Patroni REST API port, kept in its directory (patroni.api_port_of)."""
    try:
        with open(os.path.join(directory, "api_port")) as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 0
