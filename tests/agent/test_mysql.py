"""mysql services on agents: a real MariaDB as the node's user, reachable with the password only,
and a Galera cluster of three members behind the TCP router: every member writes, the router
follows a dead member within a second, a killed member rejoins with what it missed, and a
cluster stopped whole starts again from its most advanced member (the control plane's choice,
made here by hand from what each agent says)."""

import contextlib
import functools
import http.server
import os
import signal
import subprocess
import threading
import time

import pytest

from services import data_probes
from services.data_servers import Server, dump_format, load
from services.database_copies import _mysql_copy
from services.errors import OperationFailed
from tests.agent.agent_helpers import unprivileged_agent
from tests.agent.test_data import PASSWORD
from tests.agent.test_replication import put, replication, wait_for


def mysql(port, password, statement, database="conpaas"):
    env = {**os.environ, "MYSQL_PWD": password}
    argv = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "conpaas", "-N", "-B"]
    argv += ["--connect-timeout=3", database]
    return subprocess.run(argv, input=statement, env=env, capture_output=True, text=True, timeout=60)


def member(name, peers=(), bootstrap=False, port=None):
    spec = {"runtime": "mysql", "password": PASSWORD, "galera": {"cluster": "svc-1", "member": name}}
    # Started again on its port, as the control plane does: the router's members stay right.
    return {**spec, "peers": list(peers), "bootstrap": bootstrap, **({"port": port} if port else {})}


def test_it_runs_mariadb_as_the_node_user_and_the_workers_clients_load_copy_dump_and_restore(tmp_path):
    with unprivileged_agent() as node:
        server = put(node, "db", {"runtime": "mysql", "password": PASSWORD})
        port = server["port"]
        assert mysql(port, PASSWORD, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)").returncode == 0
        refused = mysql(port, "wrong-password-000000", "SELECT 1")
        assert refused.returncode != 0 and "Access denied" in refused.stderr
        ps = subprocess.run(["ps", "-o", "user=", "-p", str(server["pid"])], capture_output=True, text=True)
        assert ps.stdout.strip() == "nobody"
        assert replication(node, "db") == {"role": "primary", "lag_s": 0}

        # A mysqldump file loads with a row counter (its multi-row INSERTs counted per row).
        client = Server("mysql", "127.0.0.1", port, PASSWORD)
        dump = tmp_path / "shop.sql"
        dump.write_text(
            "DROP TABLE IF EXISTS `items`;\nCREATE TABLE `items` (id int PRIMARY KEY, name text);\n"
            "INSERT INTO `items` VALUES (1,'a'),(2,'b'),(3,'c');\nINSERT INTO `items` VALUES (4,'d');\n"
        )
        reports = []
        assert dump_format(str(dump), "mysql") == "mysql"
        counters = load(client, str(dump), "mysql", lambda text, c: reports.append(text))
        assert counters["items"] == 4 and reports[-1].endswith("4 rows loaded")
        bad = tmp_path / "bad.sql"
        bad.write_text("INSERT INTO `items` VALUES (9,'z');\nINSERT INTO nowhere VALUES (1);\n")
        with pytest.raises(OperationFailed, match="refused the dump: .*nowhere"):
            load(client, str(bad), "mysql", lambda text, c: None)
        assert mysql(port, PASSWORD, "SELECT count(*) FROM items").stdout.strip() == "4"  # the first row rolled back

        # A preview's copy is another database; the backup a consistent dump, its check the counts.
        _mysql_copy(client, "copy_1")
        assert mysql(port, PASSWORD, "SELECT count(*) FROM items", database="copy_1").stdout.strip() == "4"
        assert data_probes.mysql_table_counts(client) == {
            "conpaas/items": 4, "conpaas/t": 1, "copy_1/items": 4, "copy_1/t": 1
        }  # fmt: skip
        backup = tmp_path / "backup.sql"
        data_probes.mysql_dump(client, str(backup))

        # A new server restores the backup from a URL, as a verification or a rebuild does.
        with serving(tmp_path) as base:
            restored = put(node, "verify", {"runtime": "mysql", "password": PASSWORD,
                                            "restore": {"url": f"{base}/backup.sql"}})  # fmt: skip
            missing = node.call("PUT", "/v1/instances/gone", {"runtime": "mysql", "password": PASSWORD,
                                                              "restore": {"url": f"{base}/nothing.sql"}})  # fmt: skip
        assert missing.status == 422 and "could not download the dump to restore: HTTP 404" in missing.json()["error"]
        assert mysql(restored["port"], PASSWORD, "SELECT count(*) FROM items").stdout.strip() == "4"

        assert node.call("DELETE", "/v1/instances/db").status == 204
        again = put(node, "db", {"runtime": "mysql", "password": PASSWORD, "port": port})
        assert mysql(again["port"], PASSWORD, "SELECT x FROM t").stdout.strip() == "42"


@contextlib.contextmanager
def serving(directory):
    """The files of `directory` over HTTP on a free loopback port, for as long as the block runs."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_galera_cluster_behind_the_router_fails_over_rejoins_and_restarts_from_its_most_advanced_member():
    with unprivileged_agent() as node:
        first = put(node, "g1", member("g1"))
        seed = {"host": "127.0.0.1", "port": first["details"]["galera_port"]}
        servers = {"g1": first}
        for name in ("g2", "g3"):
            servers[name] = put(node, name, member(name, [seed]))
        for name in servers:
            assert replication(node, name)["role"] == "synced"
        assert replication(node, "g1")["cluster_size"] == 3

        def members():
            return [
                {"name": n, "host": "127.0.0.1", "port": s["port"], "check_port": s["details"]["check_port"]}
                for n, s in servers.items()
            ]

        router = put(node, "router", {"runtime": "tcp_router", "engine": "mysql", "password": PASSWORD,
                                      "members": members()})  # fmt: skip
        port = router["port"]
        # Every member takes writes; the router sends them all to one (balance first).
        assert mysql(servers["g2"]["port"], PASSWORD, "CREATE TABLE t (id int PRIMARY KEY)").returncode == 0
        assert mysql(servers["g3"]["port"], PASSWORD, "INSERT INTO t VALUES (1)").returncode == 0
        wait_for(lambda: mysql(port, PASSWORD, "INSERT INTO t VALUES (2)").returncode == 0, what="a routed write")
        wait_for(lambda: node.call("GET", "/v1/instances/router").json()["replication"]["primary"], what="a primary")
        writer = node.call("GET", "/v1/instances/router").json()["replication"]["primary"]
        assert mysql(port, PASSWORD, "SELECT @@wsrep_node_name").stdout.strip() == writer
        # Reads through the replica port spread over every synced member, once their checks passed.
        reader = router["details"]["replica_port"]
        wait_for(lambda: len(node.call("GET", "/v1/instances/router").json()["replication"]["replicas"]) == 3)
        read = [mysql(reader, PASSWORD, "SELECT @@wsrep_node_name").stdout.strip() for _ in range(6)]
        assert sorted(set(read)) == sorted(servers), read

        os.kill(servers[writer]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: mysql(port, PASSWORD, "INSERT INTO t VALUES (3)").returncode == 0, what="a write after it")
        assert time.monotonic() - killed < 10
        assert mysql(port, PASSWORD, "SELECT @@wsrep_node_name").stdout.strip() != writer
        said = replication(node, writer)
        assert said["role"] is None and said["seqno"] >= 0  # recovered from its InnoDB log

        # The dead member started again joins the others and is given what it missed.
        alive = [n for n in servers if n != writer]
        peers = [{"host": "127.0.0.1", "port": servers[n]["details"]["galera_port"]} for n in alive]
        servers[writer] = put(node, writer, member(writer, peers, port=servers[writer]["port"]))
        assert mysql(servers[writer]["port"], PASSWORD, "SELECT count(*) FROM t").stdout.strip() == "3"

        # Stopped whole (every member killed): each says its position, the most advanced starts
        # a new cluster from its data and the others join it.
        assert mysql(servers[alive[0]]["port"], PASSWORD, "INSERT INTO t VALUES (4)").returncode == 0
        last = alive[0]
        for name in servers:
            os.kill(servers[name]["pid"], signal.SIGKILL)
        wait_for(lambda: all(replication(node, n)["role"] is None for n in servers), what="every member down")
        positions = {name: replication(node, name)["seqno"] for name in servers}
        most = max(positions, key=positions.get)
        assert positions[most] == positions[last]
        servers[most] = put(node, most, member(most, peers, bootstrap=True, port=servers[most]["port"]))
        seed = [{"host": "127.0.0.1", "port": servers[most]["details"]["galera_port"]}]
        for name in servers:
            if name != most:
                servers[name] = put(node, name, member(name, seed, port=servers[name]["port"]))
        for name in servers:
            assert mysql(servers[name]["port"], PASSWORD, "SELECT count(*) FROM t").stdout.strip() == "4"
        wait_for(lambda: mysql(port, PASSWORD, "INSERT INTO t VALUES (5)").returncode == 0, what="writes again")
