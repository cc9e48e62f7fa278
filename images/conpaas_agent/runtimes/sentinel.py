"""sentinel: Redis Sentinel (Debian's redis-sentinel), one per node of a replicated redis service
and one on its router node, so that a master's node lost leaves a majority of them to elect the
replica that takes over. The agent writes its config; Sentinel rewrites it as it learns (the
other sentinels, the replicas, a new master).

``monitor`` is the master a new sentinel starts watching: the control plane's view when it
starts it. A sentinel started again begins afresh from the spec (the others tell it the rest
within a second or two), which also forgets members removed by a scale-down."""

from __future__ import annotations

import os
import subprocess

from .base import Run, installed, instance_environ, int_field
from .data import DataRecipe, answers_tcp, private_file, validate_address

REDIS_SENTINEL = "/usr/bin/redis-sentinel"
REDIS_CLI = "/usr/bin/redis-cli"
# The name every sentinel of a service monitors its master by.
MASTER_NAME = "conpaas"
# A master silent this long is down for a sentinel (its "subjective" view; a quorum of them
# makes it "objective" and starts the failover). Short enough for failover in a few seconds,
# long enough that a busy 2-core machine does not trigger one.
DOWN_AFTER_MS = 2000
FAILOVER_TIMEOUT_MS = 10000
MAX_SENTINELS = 9


class Sentinel(DataRecipe):
    name = "sentinel"
    fields = frozenset({"password", "port", "monitor", "quorum"})

    def validate(self, body: dict) -> dict:
        spec = super().validate(body)
        spec["monitor"] = validate_address(body.get("monitor"), "monitor")
        spec["quorum"] = int_field(body, "quorum", 1, MAX_SENTINELS)
        return spec

    def start(self, run: Run) -> None:
        self.refuse_root()
        sentinel = installed(REDIS_SENTINEL, "redis-sentinel", "redis")
        password, master = run.spec["password"], run.spec["monitor"]
        # Sentinels and the servers share the service's password: each sentinel asks it of
        # the others (sentinel-pass) and of the servers (auth-pass).
        private_file(
            run.path("sentinel.conf"),
            f'bind {run.host}\nport {run.port}\ndaemonize no\nlogfile ""\ndir {run.dir}\n'
            f"protected-mode no\nrequirepass {password}\nsentinel sentinel-pass {password}\n"
            f"sentinel monitor {MASTER_NAME} {master['host']} {master['port']} {run.spec['quorum']}\n"
            f"sentinel auth-pass {MASTER_NAME} {password}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n",
        )
        run.spawn([sentinel, run.path("sentinel.conf")])

    def ready(self, run: Run) -> bool:
        return self._cli(run.dir, run.host, run.port, run.spec["password"], "PING") == "PONG"

    def accepts(self, host: str, port: int) -> bool:
        return answers_tcp(host, port)

    def replication(self, directory: str, host: str, port: int, record: dict) -> dict:
        """The master this sentinel knows: after a failover, the new one."""
        said = self._cli(directory, host, port, record["password"], "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        parts = said.split()
        if len(parts) != 2 or not parts[1].isdigit():
            return {"role": "sentinel", "master": None, "detail": said[:200] or "no answer"}
        return {"role": "sentinel", "master": {"host": parts[0], "port": int(parts[1])}}

    @staticmethod
    def _cli(directory: str, host: str, port: int, password: str, *command: str) -> str:
        env = instance_environ(os.path.join(directory, "home"), {"REDISCLI_AUTH": password})
        try:
            done = subprocess.run(
                [REDIS_CLI, "-h", host, "-p", str(port), *command], env=env, capture_output=True, text=True, timeout=5
            )
        except subprocess.TimeoutExpired:
            return ""
        return done.stdout.strip().replace("\r", "")

    def marker(self, run: Run) -> str:
        return run.path("sentinel.conf")
