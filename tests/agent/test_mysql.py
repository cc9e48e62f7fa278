"""mysql services on an agent: a real MariaDB as the node's user, reachable with the password only,
and the workers' own clients against it (a dump's load, a preview copy, a backup dump restored from
a URL). The Galera cluster behind the TCP router (joins, failover, a cluster stopped whole) is
tests/e2e/test_mysql.py, on isolated nodes: a state transfer costs at least 10 s, once."""

import contextlib
import functools
import http.server
import os
import subprocess
import threading

import pytest

from services import data_probes
from services.data_servers import Server, dump_format, load
from services.database_copies import _mysql_copy
from services.errors import OperationFailed
from tests.agent.agent_helpers import unprivileged_agent
from tests.agent.test_data import PASSWORD
from tests.agent.test_replication import put, replication


def mysql(port, password, statement, database="conpaas"):
    env = {**os.environ, "MYSQL_PWD": password}
    argv = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "conpaas", "-N", "-B"]
    argv += ["--connect-timeout=3", database]
    return subprocess.run(argv, input=statement, env=env, capture_output=True, text=True, timeout=60)


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
