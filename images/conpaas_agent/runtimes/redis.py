"""redis: a Redis 7 server per node (data.py: what data services share), its data in an AOF;
with a restore a new instance begins with the keys of an RDB file behind a presigned URL; with
``replica_of`` it starts as a replica of that master (Redis Sentinel, sentinel.py, moves the
master role afterwards: the spec's master is only where a new server starts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from conpaas_common.wire import REDIS_DATABASES

from .base import InstanceError, Run, installed, instance_environ, why_it_failed
from .data import RESTORE_TIMEOUT, DataRecipe, download, private_file, validate_address, validate_restore_url

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


class Redis(DataRecipe):
    """A Redis 7 server, its data in an AOF; with ``restore`` a new instance begins with the
    keys of an RDB file (a presigned S3 URL) rather than empty."""

    name = "redis"
    fields = frozenset({"password", "port", "restore", "replica_of"})

    def validate(self, body: dict) -> dict:
        spec = super().validate(body)
        if body.get("replica_of") is not None:
            spec["replica_of"] = validate_address(body["replica_of"], "replica_of")
        if body.get("restore") is not None:
            spec["restore"] = validate_restore_url(body["restore"], "an RDB file")
        return spec

    def start(self, run: Run) -> None:
        self.refuse_root()
        server = installed(REDIS_SERVER, "redis-server", self.name)
        data = run.path("data")
        os.makedirs(data, mode=0o700, exist_ok=True)
        # A replica takes its master's data whatever it held: no restore.
        restoring = bool(run.spec.get("restore")) and not run.spec.get("replica_of") and not self._holds_data(data)
        if restoring:
            download(run.spec["restore"]["url"], os.path.join(data, "dump.rdb"), "the RDB file")
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
        # The password is in the config file, not on the command line (ps shows that). Every
        # member of a replicated service has the same one: replicas authenticate with it
        # (masterauth), and so does Sentinel.
        password = run.spec["password"]
        replica = ""
        if master := run.spec.get("replica_of"):
            replica = f"replicaof {master['host']} {master['port']}\n"
        private_file(
            run.path("redis.conf"),
            f"bind {run.host}\nport {run.port}\nrequirepass {password}\nmasterauth {password}\n"
            f"dir {run.path('data')}\ndaemonize no\nprotected-mode no\n"
            f'appendonly {"yes" if appendonly else "no"}\nsave 60 1000\nlogfile ""\n'
            f"databases {REDIS_DATABASES}\n{replica}",
        )

    def replication(self, directory: str, host: str, port: int, record: dict) -> dict:
        """The server's part in its replication, as Redis says it (INFO replication): `primary`
        or `replica`, and for a replica whether its link to the master is up and the seconds
        since it last heard from it (`lag_s`; Redis counts no lag of its own in time)."""
        env = instance_environ(os.path.join(directory, "home"), {})
        env["REDISCLI_AUTH"] = record["password"]
        try:
            done = subprocess.run(
                [REDIS_CLI, "-h", host, "-p", str(port), "INFO", "replication"],
                env=env,
                capture_output=True,
                text=True,
                timeout=5,
            )
        except subprocess.TimeoutExpired:
            return {"role": None, "detail": "the server did not answer within 5 s"}
        info = dict(line.split(":", 1) for line in done.stdout.replace("\r", "").splitlines() if ":" in line)
        if info.get("role") == "master":
            return {"role": "primary", "lag_s": 0, "replicas": int(info.get("connected_slaves", 0))}
        if info.get("role") == "slave":
            up = info.get("master_link_status") == "up"
            return {
                "role": "replica",
                "lag_s": int(info.get("master_last_io_seconds_ago", -1)) if up else None,
                "master": f"{info.get('master_host')}:{info.get('master_port')}",
                "link": "up" if up else "down",
                "in_sync": up and info.get("master_sync_in_progress") == "0",
            }
        return {"role": None, "detail": (done.stdout + done.stderr).strip()[:200] or "no answer"}

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
