"""A replicated Redis on agents: servers started as replicas of a master, Redis Sentinel on each
node and on the router, and the TCP router (HAProxy) that always sends the service's port to the
current master. Real processes throughout: kill -9 of the master, and the router's port takes
writes again once Sentinel has promoted a replica."""

import contextlib
import os
import signal
import subprocess
import time

from conpaas_common.procs import free_port
from tests.agent.agent_helpers import unprivileged_agent
from tests.agent.test_data import PASSWORD, redis
from tests.harness import descendants as descendants_of


def put(agent, name, spec):
    reply = agent.call("PUT", f"/v1/instances/{name}", spec)
    assert reply.status == 200, reply.body
    return reply.json()


def wait_for(condition, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def replication(agent, name):
    return agent.call("GET", f"/v1/instances/{name}").json().get("replication")


def test_it_fails_over_behind_one_address_when_the_master_dies():
    with unprivileged_agent() as node:
        master = put(node, "s1", {"runtime": "redis", "password": PASSWORD})
        at = {"host": "127.0.0.1", "port": master["port"]}
        replicas = [put(node, name, {"runtime": "redis", "password": PASSWORD, "replica_of": at}) for name in ("s2",)]
        servers = {"s1": master, "s2": replicas[0]}
        members = [{"name": name, "host": "127.0.0.1", "port": s["port"]} for name, s in servers.items()]
        router = put(
            node, "router", {"runtime": "tcp_router", "engine": "redis", "password": PASSWORD, "members": members}
        )
        port, replica_port = router["port"], router["details"]["replica_port"]
        # Three sentinels (two nodes and the router, in the platform), two make the quorum.
        for name in ("q1", "q2", "q3"):
            put(node, name, {"runtime": "sentinel", "password": PASSWORD, "monitor": at, "quorum": 2})

        assert replication(node, "s1")["role"] == "primary"
        wait_for(lambda: replication(node, "s2").get("link") == "up", what="s2's link to its master")
        assert replication(node, "s2")["role"] == "replica"
        wait_for(
            lambda: redis(port, PASSWORD, "SET", "k", "v1").stdout.strip() == "OK", what="a write through the router"
        )
        # The replica port reaches the primary until the replica's first check passes, then the
        # replica, which refuses writes.
        wait_for(
            lambda: "role:slave" in redis(replica_port, PASSWORD, "INFO", "replication").stdout,
            what="the replica port reaching the replica",
        )
        wait_for(lambda: redis(replica_port, PASSWORD, "GET", "k").stdout.strip() == "v1", what="a replica read")
        assert "READONLY" in redis(replica_port, PASSWORD, "SET", "k", "x").stdout
        assert "NOAUTH" in redis(port, "", "GET", "k").stdout

        # A new member put in the router's slots takes no write before its check passes.
        third = put(node, "s3", {"runtime": "redis", "password": PASSWORD, "replica_of": at})
        members.append({"name": "s3", "host": "127.0.0.1", "port": third["port"]})
        again = put(
            node, "router", {"runtime": "tcp_router", "engine": "redis", "password": PASSWORD, "members": members}
        )
        assert again["pid"] == router["pid"]  # taken in place, not restarted
        failed = [redis(port, PASSWORD, "INCR", "n").stdout for _ in range(50)]
        assert all(answer.strip().isdigit() for answer in failed), failed

        os.kill(master["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_for(
            lambda: redis(port, PASSWORD, "SET", "k", "v2").stdout.strip() == "OK",
            timeout=30,
            what="a write through the router after the master's death",
        )
        took = time.monotonic() - killed
        assert took < 20, took
        # The sentinels say so once the failover is complete.
        new_master = wait_for(
            lambda: (
                (replication(node, "q1")["master"] or {}).get("port") != master["port"]
                and replication(node, "q1")["master"]["port"]
            ),
            what="the sentinels' new master",
        )
        assert new_master in (servers["s2"]["port"], third["port"])
        promoted = "s2" if new_master == servers["s2"]["port"] else "s3"
        assert replication(node, promoted)["role"] == "primary"
        # The router says where it sends the port: the member its checks find the primary.
        assert wait_for(lambda: replication(node, "router")["primary"] == promoted, what="the router's primary")
        assert redis(port, PASSWORD, "GET", "k").stdout.strip() == "v2"


def test_it_refuses_a_router_spec_it_cannot_take():
    with unprivileged_agent() as node:
        body = {"runtime": "tcp_router", "engine": "mongodb", "password": PASSWORD, "members": []}
        assert node.call("PUT", "/v1/instances/router", body).status == 400
        six = [{"name": f"m{n}", "host": "127.0.0.1", "port": free_port()} for n in range(6)]
        body = {"runtime": "tcp_router", "engine": "redis", "password": PASSWORD, "members": six}
        reply = node.call("PUT", "/v1/instances/router", body)
        assert reply.status == 400 and "at most 5" in reply.json()["error"]
        body = {"runtime": "redis", "password": PASSWORD, "replica_of": {"host": "db.example", "port": 6379}}
        reply = node.call("PUT", "/v1/instances/s", body)
        assert reply.status == 400 and "IP address" in reply.json()["error"]


def psql(port, sql):
    env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "3"}
    argv = ["psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(port), "-U", "conpaas", "conpaas", "-c", sql]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_postgresql_members_fail_over_through_patroni_behind_one_address():
    with unprivileged_agent() as node:
        dcs = put(node, "dcs", {"runtime": "etcd"})
        cluster = {"scope": "db", "dcs": {"host": "127.0.0.1", "port": dcs["port"]}}
        spec = {"runtime": "postgresql", "password": PASSWORD}
        first = put(node, "p1", {**spec, "cluster": {**cluster, "member": "p1"}})
        wait_for(lambda: replication(node, "p1").get("role") == "primary", 60, "p1 to bootstrap as the primary")
        second = put(node, "p2", {**spec, "cluster": {**cluster, "member": "p2"}})
        wait_for(lambda: replication(node, "p2").get("in_sync"), 60, "p2 to stream from p1")
        assert replication(node, "p2")["role"] == "standby" and replication(node, "p2")["lag_s"] == 0
        # The control plane's next spec names the REST API port the member took: no restart.
        named = {**cluster, "member": "p2", "api_port": second["details"]["api_port"]}
        again = put(node, "p2", {**spec, "cluster": named})
        assert again["pid"] == second["pid"]
        members = [
            {"name": name, "host": "127.0.0.1", "port": s["port"], "check_port": s["details"]["api_port"]}
            for name, s in (("p1", first), ("p2", second))
        ]
        router = put(
            node, "router", {"runtime": "tcp_router", "engine": "postgresql", "password": PASSWORD, "members": members}
        )
        port, replica_port = router["port"], router["details"]["replica_port"]
        wait_for(lambda: replication(node, "router")["primary"] == "p1", 10, "the router to reach p1")
        assert psql(port, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)").returncode == 0
        wait_for(lambda: psql(replica_port, "SELECT pg_is_in_recovery()").stdout.strip() == "t", 10, "a standby read")
        wait_for(lambda: psql(replica_port, "SELECT count(*) FROM t").stdout.strip() == "1", 10, "the row on p2")

        # Every process of p1: Patroni, and its PostgreSQL, which runs in a session of its own.
        postmaster = int((node.home / "instances" / "p1" / "data" / "postmaster.pid").read_text().split()[0])
        killed = time.monotonic()
        for pid in [first["pid"], *descendants_of(first["pid"]), postmaster, *descendants_of(postmaster)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: psql(port, "INSERT INTO t VALUES (2)").returncode == 0, 60, "a write after p1's death")
        took = time.monotonic() - killed
        assert took < 30, took
        assert replication(node, "p2")["role"] == "primary"
        assert psql(port, "SELECT count(*) FROM t").stdout.strip() == "2"
