"""A postgresql server run by Patroni (Debian's patroni), the member of a replicated service: its
members agree through the etcd on the service's router node (etcd.py) which of them is the
primary; the first bootstraps the cluster, the others clone it (pg_basebackup) and stream from
it, and when the primary dies Patroni promotes the most advanced standby. The router checks each
member's Patroni REST API (GET /primary, GET /replica) to send connections to the right one.

The config is JSON, which is YAML too: the agent writes it with the standard library."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.request

from conpaas_common.procs import free_port
from conpaas_common.wire import PG_DATABASE, PG_USER

from .base import InstanceError, Run, installed
from .data import private_file, validate_address

PATRONI = "/usr/bin/patroni"
REPLICATION_USER = "replicator"
_SCOPE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MEMBER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Patroni's rhythm: the leader lock lives TTL seconds, renewed every LOOP_WAIT. A primary whose
# node died loses it within TTL, and a standby takes over at its next loop: failover within
# TTL + LOOP_WAIT seconds (Patroni wants LOOP_WAIT + 2 x RETRY_TIMEOUT <= TTL: 7 is the least
# with these). Shorter would fail over on a busy machine's pauses; bench/failover.py measured
# 11.6 s with 10, 9.8 s and 10.2 s with 8.
TTL, LOOP_WAIT, RETRY_TIMEOUT = 7, 1, 3
# A standby further behind than this (bytes of WAL) is not promoted: what it lacks would be lost.
MAXIMUM_LAG_ON_FAILOVER = 16 << 20


def validate_cluster(value: object) -> dict:
    """The spec's `cluster`: the service's cluster (scope), this member's name, the etcd, whether
    commits wait for a standby, and the REST API's port when it had one."""
    if not isinstance(value, dict) or not set(value) <= {"scope", "member", "dcs", "synchronous", "api_port"}:
        raise InstanceError("cluster must be an object with scope, member, dcs, synchronous and api_port", 400)
    scope, member = value.get("scope"), value.get("member")
    if not isinstance(scope, str) or not _SCOPE_RE.match(scope):
        raise InstanceError(f"cluster.scope must match {_SCOPE_RE.pattern}", 400)
    if not isinstance(member, str) or not _MEMBER_RE.match(member):
        raise InstanceError(f"cluster.member must match {_MEMBER_RE.pattern}", 400)
    synchronous = value.get("synchronous", False)
    if not isinstance(synchronous, bool):
        raise InstanceError("cluster.synchronous must be true or false", 400)
    cluster = {"scope": scope, "member": member, "dcs": validate_address(value.get("dcs"), "cluster.dcs")}
    cluster["synchronous"] = synchronous
    api_port = value.get("api_port")
    if api_port is not None:
        if isinstance(api_port, bool) or not isinstance(api_port, int) or not 1024 <= api_port <= 65535:
            raise InstanceError("cluster.api_port must be an integer from 1024 to 65535", 400)
        cluster["api_port"] = api_port
    return cluster


def api_port_of(run: Run) -> int:
    """The REST API's port: the spec's (a restart keeps what the router checks), or a new one
    kept in the instance's directory."""
    path = run.path("api_port")
    if port := run.spec["cluster"].get("api_port"):
        pass
    else:
        try:
            with open(path) as fh:
                port = int(fh.read())
        except (OSError, ValueError):
            port = free_port(run.host)
    with open(path, "w") as fh:
        fh.write(str(port))
    return port


def write_config(run: Run, pg_bin: str, parameters: dict[str, str]) -> str:
    cluster, password = run.spec["cluster"], run.spec["password"]
    api = f"{run.host}:{api_port_of(run)}"
    # After the first member's initdb, the service's database (the others clone it).
    post_init = private_file(
        run.path("post_init.sh"),
        f'#!/bin/sh\nexec {pg_bin}/psql -X -q -v ON_ERROR_STOP=1 "$1" -c "CREATE DATABASE {PG_DATABASE}"\n',
    )
    os.chmod(post_init, 0o700)
    config = {
        "scope": cluster["scope"],
        "name": cluster["member"],
        "log": {"level": "WARNING"},
        # Reading it (the router's checks) is open; changing it (a switchover, its settings)
        # takes the service's password: linked services reach this port too.
        "restapi": {
            "listen": api,
            "connect_address": api,
            "authentication": {"username": PG_USER, "password": password},
        },
        "etcd3": {"hosts": [f"{cluster['dcs']['host']}:{cluster['dcs']['port']}"], "protocol": "http"},
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
                # Its members still see each other while the etcd is gone (its router rebuilt):
                # the primary stays one.
                "failsafe_mode": True,
                "synchronous_mode": cluster["synchronous"],
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": {"wal_level": "replica", "hot_standby": "on", "wal_log_hints": "on"},
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth": "scram-sha-256"}],
            "post_init": post_init,
        },
        "postgresql": {
            "listen": f"{run.host}:{run.port}",
            "connect_address": f"{run.host}:{run.port}",
            "data_dir": run.path("data"),
            "bin_dir": pg_bin,
            "pgpass": run.path("pgpass"),
            # A new standby clones the primary at once: a spread checkpoint would make it wait
            # minutes on an idle primary.
            "basebackup": [{"checkpoint": "fast"}],
            # After an asynchronous failover a standby may have received WAL the promoted one never
            # had: its timeline diverged. It is rewound, or cloned again when that fails, rather
            # than left out of the cluster.
            "remove_data_directory_on_rewind_failure": True,
            "remove_data_directory_on_diverged_timelines": True,
            "authentication": {
                "superuser": {"username": PG_USER, "password": password},
                "replication": {"username": REPLICATION_USER, "password": password},
                "rewind": {"username": PG_USER, "password": password},
            },
            "parameters": {"unix_socket_directories": run.path("sockets"), "logging_collector": "off", **parameters},
            # Clients and the other members come over the network, each with the password.
            "pg_hba": [
                "local all all scram-sha-256",
                f"host replication {REPLICATION_USER} 0.0.0.0/0 scram-sha-256",
                "host all all 0.0.0.0/0 scram-sha-256",
                "host all all ::/0 scram-sha-256",
            ],
        },
    }
    # The password is in it: the file is the node user's alone.
    return private_file(run.path("patroni.json"), json.dumps(config, indent=1))


def spawn(run: Run, pg_bin: str, parameters: dict[str, str]) -> None:
    patroni = installed(PATRONI, "patroni", "postgresql")
    run.spawn([patroni, write_config(run, pg_bin, parameters)])


def api(host: str, port: int, path: str, timeout: float = 3) -> tuple[int | None, dict]:
    """GET one of the REST API's paths: its status and JSON answer (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}
    except (OSError, ValueError):
        return None, {}


def set_synchronous(host: str, port: int, password: str, synchronous: bool) -> None:
    """Patroni's synchronous mode for the whole cluster (its settings in etcd): PATCH /config."""
    body = json.dumps({"synchronous_mode": synchronous}).encode()
    request = urllib.request.Request(f"http://{host}:{port}/config", data=body, method="PATCH")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{PG_USER}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except (OSError, urllib.error.HTTPError) as exc:
        raise InstanceError(f"Patroni did not take synchronous_mode={synchronous}: {exc}", 502) from None


def answers(host: str, port: int) -> bool:
    return api(host, port, "/liveness")[0] is not None


ROLES = {"master": "primary", "primary": "primary", "replica": "standby", "standby_leader": "standby"}
