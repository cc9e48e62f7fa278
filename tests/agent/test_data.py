"""Data services on a node: the agent runs a real PostgreSQL and a real Redis as an unprivileged
user, each with its own data directory in the node's home, reachable with the password only."""

import os
import socket
import struct
import subprocess
import threading
from contextlib import suppress

import pytest

from conpaas_common.procs import free_port
from conpaas_common.wire import REDIS_DATABASES

PASSWORD = "s3cret-" + "x" * 20


def psql(port, password, sql):
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    argv = ["psql", "-X", "-q", "-t", "-A", "-h", "127.0.0.1", "-p", str(port), "-U", "conpaas", "conpaas"]
    return subprocess.run([*argv, "-c", sql], env=env, capture_output=True, text=True, timeout=30)


def redis(port, password, *command):
    env = {**os.environ, "REDISCLI_AUTH": password}
    argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def test_it_runs_postgresql_with_the_password_and_keeps_data_across_restarts(data_agent):
    reply = data_agent.call("PUT", "/v1/instances/db", {"runtime": "postgresql", "password": PASSWORD})
    assert reply.status == 200, reply.body
    instance = reply.json()
    assert "password" not in reply.body.decode()
    port = instance["port"]
    assert psql(port, PASSWORD, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)").returncode == 0
    refused = psql(port, "wrong-password-000000", "SELECT 1")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr

    health = data_agent.call("GET", "/v1/instances/db").json()["health"]
    assert health["ok"] is True
    # Its server runs as the node's user, never root.
    ps = subprocess.run(["ps", "-o", "user=", "-p", str(instance["pid"])], capture_output=True, text=True)
    assert ps.stdout.strip() == "nobody"

    assert data_agent.call("DELETE", "/v1/instances/db").status == 204
    again = data_agent.call("PUT", "/v1/instances/db", {"runtime": "postgresql", "password": PASSWORD}).json()
    assert psql(again["port"], PASSWORD, "SELECT x FROM t").stdout.strip() == "42"


def test_it_runs_redis_with_the_password(data_agent):
    reply = data_agent.call("PUT", "/v1/instances/cache", {"runtime": "redis", "password": PASSWORD})
    assert reply.status == 200, reply.body
    port = reply.json()["port"]
    assert redis(port, PASSWORD, "SET", "k", "v").stdout.strip() == "OK"
    assert redis(port, PASSWORD, "GET", "k").stdout.strip() == "v"
    # Database 0 is production's, the others hold environments' copies (services/database_copies.py).
    assert redis(port, PASSWORD, "CONFIG", "GET", "databases").stdout.split() == ["databases", str(REDIS_DATABASES)]
    assert "NOAUTH" in redis(port, "", "GET", "k").stdout + redis(port, "", "GET", "k").stderr
    ps = subprocess.run(["ps", "-o", "args=", "-p", str(reply.json()["pid"])], capture_output=True, text=True)
    assert PASSWORD not in ps.stdout


@pytest.mark.parametrize(
    "body, message",
    [
        ({"runtime": "redis"}, "password is required"),
        ({"runtime": "redis", "password": "short"}, "password is required"),
        ({"runtime": "postgresql", "password": PASSWORD, "archive_url": "x"}, "unknown field(s)"),
        ({"runtime": "redis", "password": PASSWORD, "port": 80}, "port must be an integer from 1024"),
        ({"runtime": "redis", "password": PASSWORD, "port": "6379"}, "port must be an integer from 1024"),
    ],
)
def test_it_refuses_a_bad_data_spec(data_agent, body, message):
    reply = data_agent.call("PUT", "/v1/instances/db", body)
    assert reply.status == 400 and message in reply.json()["error"]
    assert data_agent.call("GET", "/v1/status").json()["instances"] == {}


def test_a_server_takes_the_port_it_is_asked_for_and_says_when_that_port_is_taken(data_agent):
    """A rebuilt server keeps its clients' URL: the port the dead one had (workflows/healing.py)."""
    wanted = free_port()
    reply = data_agent.call("PUT", "/v1/instances/cache", {"runtime": "redis", "password": PASSWORD, "port": wanted})
    assert reply.status == 200, reply.body
    assert reply.json()["port"] == wanted
    assert redis(wanted, PASSWORD, "PING").stdout.strip() == "PONG"
    taken = data_agent.call("PUT", "/v1/instances/other", {"runtime": "redis", "password": PASSWORD, "port": wanted})
    assert taken.status == 409 and f"port {wanted} is in use" in taken.json()["error"]
    assert set(data_agent.call("GET", "/v1/status").json()["instances"]) == {"cache"}


def test_a_postgresql_that_takes_tcp_but_refuses_sessions_is_not_ready():
    """A server still starting (or recovering) accepts the connection and answers the startup
    packet with SQLSTATE 57P03; the agent must not call it ready or healthy then."""
    from conpaas_agent.runtimes.postgresql import Postgresql

    message = b"SFATAL\x00C57P03\x00Mthe database system is starting up\x00\x00"
    starting = b"E" + struct.pack("!I", len(message) + 4) + message
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer_like_a_starting_server():
            with suppress(OSError):
                while True:
                    connection, _ = server.accept()
                    with connection:
                        connection.recv(1024)
                        connection.sendall(starting)

        threading.Thread(target=answer_like_a_starting_server, daemon=True).start()
        assert not Postgresql().accepts("127.0.0.1", port)
        assert Postgresql().healthy("127.0.0.1", port, "/") == {
            "ok": False,
            "status": None,
            "detail": "refuses connections",
        }


def test_a_postgresql_that_takes_sessions_is_ready(data_agent):
    from conpaas_agent.runtimes.postgresql import Postgresql

    reply = data_agent.call("PUT", "/v1/instances/db", {"runtime": "postgresql", "password": PASSWORD})
    assert reply.status == 200, reply.body
    assert Postgresql().accepts("127.0.0.1", reply.json()["port"])
