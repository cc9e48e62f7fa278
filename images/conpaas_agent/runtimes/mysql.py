"""mysql: a MariaDB 10.11 server per node (data.py: what data services share), run directly as the
node's user from its own config file, never Debian's service. With ``galera`` it is a member of a
Galera cluster (Debian's galera-4): every member takes writes, a member that joins is given the
data by a state transfer from a synced one (mariabackup, which leaves the donor taking writes),
and a small check server (galera_check.py)
answers the service's router whether the member is synced. With ``restore`` a new server begins
with the tables of a SQL dump (a backup) behind a presigned URL.

The service's user (MYSQL_USER) reaches the server over the network with the password, and so do
the agent and the check server through the server's unix socket, from a 0600 client option file
(client.cnf): a member's data may come from another node by a state transfer, and the accounts of
another node's user with it. Only a new server's first statements (making that user) go as the
node's own user (unix_socket authentication, which mariadb-install-db gives the user running it)."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time

from conpaas_common.procs import free_port
from conpaas_common.wire import MYSQL_DATABASE, MYSQL_USER

from .base import InstanceError, Run, installed, instance_environ, server_socket, why_it_failed
from .data import RESTORE_TIMEOUT, DataRecipe, download, private_file, validate_address, validate_restore_url

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"
CLIENT = "/usr/bin/mariadb"
GALERA = "/usr/lib/galera/libgalera_smm.so"
CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "galera_check.py")
MAX_PEERS = 8
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
# Galera's states (wsrep_local_state_comment) as the platform names a member's part.
ROLES = {"Synced": "synced", "Donor/Desynced": "donor", "Joining": "joining", "Joined": "joining"}
# The ports a member listens on besides its SQL port: Galera's group communication, incremental
# and full state transfers, and the router's check.
GALERA_PORTS = ("galera_port", "ist_port", "sst_port", "check_port")


def validate_galera(body: dict) -> dict:
    """The spec's `galera` (the cluster's and this member's names), `peers` (the members a start
    joins: none, and this member starts the cluster) and `bootstrap` (start a new cluster from
    this member's data). Peers and bootstrap only matter at a start (instances.START_ONLY_FIELDS):
    a running member is not restarted when members come and go."""
    value = body["galera"]
    if not isinstance(value, dict) or set(value) != {"cluster", "member"}:
        raise InstanceError("galera must be an object with cluster and member", 400)
    for field in ("cluster", "member"):
        if not isinstance(value.get(field), str) or not _NAME_RE.match(value[field]):
            raise InstanceError(f"galera.{field} must match {_NAME_RE.pattern}", 400)
    peers = body.get("peers") or []
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise InstanceError(f"peers must be a list of at most {MAX_PEERS} members' {{host, port}}", 400)
    bootstrap = body.get("bootstrap", False)
    if not isinstance(bootstrap, bool):
        raise InstanceError("bootstrap must be true or false", 400)
    return {
        "galera": {"cluster": value["cluster"], "member": value["member"]},
        "peers": [validate_address(peer, "peers[]") for peer in peers],
        "bootstrap": bootstrap,
    }


def socket_of(directory: str) -> str:
    return server_socket(directory, "mysqld.sock")


def ports_of(run: Run) -> dict[str, int]:
    """The member's Galera ports, chosen at its first start and kept in its directory (its peers
    and the router know them)."""
    path = run.path("galera_ports.json")
    try:
        with open(path) as fh:
            ports = json.load(fh)
        if set(ports) == set(GALERA_PORTS):
            return ports
    except (OSError, ValueError):
        pass
    ports = {name: free_port(run.host) for name in GALERA_PORTS}
    with open(path, "w") as fh:
        json.dump(ports, fh)
    return ports


def client_options(directory: str) -> str:
    return os.path.join(directory, "client.cnf")


def write_client_options(directory: str, password: str) -> None:
    """The service user's credentials and the server's socket, for the agent's and the check
    server's client (the password in no command line and no environment)."""
    text = f"[client]\nuser={MYSQL_USER}\npassword={password}\nsocket={socket_of(directory)}\n"
    private_file(client_options(directory), text)


def sql(
    directory: str, statement: str, timeout: float = 30, database: str = "", as_node_user: bool = False
) -> subprocess.CompletedProcess:
    """One or more statements through the server's socket, on the client's standard input
    (nothing on a command line): tab-separated rows, no header. As the service's user, or as the
    node's own (unix_socket) while a new server has no other."""
    if as_node_user:
        argv = [CLIENT, "--no-defaults", f"--socket={socket_of(directory)}"]
    else:
        argv = [CLIENT, f"--defaults-file={client_options(directory)}"]
    argv += ["-N", "-B", "--connect-timeout=5"]
    env = instance_environ(os.path.join(directory, "home"), {})
    return subprocess.run(
        [*argv, *([database] if database else [])],
        input=statement,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def status(directory: str, names: tuple[str, ...]) -> dict[str, str]:
    """Global status variables of the server, {} when it does not answer."""
    quoted = ", ".join(f"'{name}'" for name in names)
    try:
        done = sql(directory, f"SHOW GLOBAL STATUS WHERE Variable_name IN ({quoted})", timeout=5)
    except subprocess.TimeoutExpired:
        return {}
    if done.returncode != 0:
        return {}
    return dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)


class Mysql(DataRecipe):
    """A MariaDB server; with ``galera`` a member of the service's Galera cluster."""

    name = "mysql"
    fields = frozenset({"password", "port", "restore", "galera", "peers", "bootstrap"})
    # A member that joins waits for its state transfer: the whole database, copied.
    start_timeout = 600.0

    def validate(self, body: dict) -> dict:
        spec = super().validate(body)
        if body.get("galera") is not None:
            spec.update(validate_galera(body))
        if body.get("restore") is not None:
            spec["restore"] = validate_restore_url(body["restore"], "a SQL dump")
        return spec

    def start(self, run: Run) -> None:
        self.refuse_root()
        mariadbd = installed(MARIADBD, "MariaDB", self.name)
        data = run.path("data")
        galera = run.spec.get("galera")
        # A member that joins is given the whole data directory by its donor: nothing to make.
        starts_cluster = not galera or run.spec["bootstrap"] or not run.spec["peers"]
        fresh = not os.path.exists(os.path.join(data, "mysql"))
        if fresh and starts_cluster:
            self._install(run, data)
        elif fresh:
            shutil.rmtree(data, ignore_errors=True)  # what a failed transfer left: a new one starts clean
        os.makedirs(data, mode=0o700, exist_ok=True)
        self._write_config(run, data)
        write_client_options(run.dir, run.spec["password"])
        if galera:
            ports = ports_of(run)
            # Its config file's path marks it as this instance's process (marker()).
            argv = [sys.executable, CHECK, "--config", run.path("my.cnf"), "--client", client_options(run.dir)]
            run.spawn([*argv, "--host", run.host, "--port", str(ports["check_port"])])
            if starts_cluster:
                self._mark_safe_to_bootstrap(data)
        argv = [mariadbd, f"--defaults-file={run.path('my.cnf')}"]
        if galera and starts_cluster:
            argv.append("--wsrep-new-cluster")
        server = run.spawn(argv)
        if fresh and starts_cluster:
            try:
                self._await_socket(run, server)
                self._create_user(run)
                if run.spec.get("restore"):
                    self._restore(run, run.spec["restore"]["url"])
            except BaseException:
                server.kill()
                server.wait()
                shutil.rmtree(data, ignore_errors=True)
                raise

    def _install(self, run: Run, data: str) -> None:
        shutil.rmtree(data, ignore_errors=True)
        self._write_config(run, data)
        with open(run.logfile, "ab") as out:
            done = subprocess.run(
                # The node's user gets an account of its own that its socket connections reach.
                [
                    INSTALL_DB,
                    f"--defaults-file={run.path('my.cnf')}",
                    "--skip-test-db",
                    "--auth-root-authentication-method=socket",
                    f"--auth-root-socket-user={pwd.getpwuid(os.geteuid()).pw_name}",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
                env=run.env,
                timeout=300,
            )
        if done.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise InstanceError(f"mariadb-install-db failed: {why_it_failed(run.logfile)}")

    def _write_config(self, run: Run, data: str) -> None:
        # Everything on the server's own config file (--defaults-file): Debian's /etc/mysql is
        # not read, and Galera's state-transfer scripts find the same settings there.
        lines = [
            "[mysqld]",
            f"datadir={data}",
            f"socket={socket_of(run.dir)}",
            f"port={run.port}",
            f"bind-address={run.host}",
            f"pid-file={run.path('mysqld.pid')}",
            "skip-name-resolve",
            "character-set-server=utf8mb4",
            "collation-server=utf8mb4_unicode_ci",
            f"tmpdir={run.path('home')}",
        ]
        if galera := run.spec.get("galera"):
            ports = ports_of(run)
            peers = ",".join(f"{p['host']}:{p['port']}" for p in run.spec["peers"])
            # A member silent for 3 s is suspected, and dropped once the others agree: until then
            # they hold their commits (Galera's default, 5 s, measured 8.5 s of writes stopped in
            # bench/failover.py). A member that cannot agree is dropped after the default 15 s.
            options = (
                f"gmcast.listen_addr=tcp://{run.host}:{ports['galera_port']};"
                f"ist.recv_addr={run.host}:{ports['ist_port']};base_dir={data};"
                "evs.suspect_timeout=PT3S"
            )
            lines += [
                "binlog_format=ROW",
                "default_storage_engine=InnoDB",
                "innodb_autoinc_lock_mode=2",
                "wsrep_on=ON",
                f"wsrep_provider={GALERA}",
                f"wsrep_cluster_name={galera['cluster']}",
                f"wsrep_cluster_address=gcomm://{peers}",
                f"wsrep_node_name={galera['member']}",
                f"wsrep_node_address={run.host}:{ports['galera_port']}",
                f'wsrep_provider_options="{options}"',
                f"wsrep_sst_receive_address={run.host}:{ports['sst_port']}",
                "wsrep_sst_method=mariabackup",
                # A donor's mariabackup connects as the service's user: the node's own account
                # came with the data from whichever node made it.
                f"wsrep_sst_auth={MYSQL_USER}:{run.spec['password']}",
            ]
        private_file(run.path("my.cnf"), "\n".join(lines) + "\n")

    @staticmethod
    def _mark_safe_to_bootstrap(data: str) -> None:
        """The member the control plane chose to start the cluster from (the most advanced, or
        the only one): Galera refuses one that did not stop last unless told it is safe."""
        path = os.path.join(data, "grastate.dat")
        with contextlib.suppress(OSError):
            with open(path) as fh:
                text = fh.read()
            with open(path, "w") as fh:
                fh.write(re.sub(r"(?m)^safe_to_bootstrap:.*$", "safe_to_bootstrap: 1", text))

    def _await_socket(self, run: Run, server: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while sql(run.dir, "SELECT 1", timeout=10, as_node_user=True).returncode != 0:
            if server.poll() is not None:
                code = server.returncode
                raise InstanceError(f"mariadbd exited at start (code {code}): {why_it_failed(run.logfile)}")
            if time.monotonic() > deadline:
                raise InstanceError(f"mariadbd did not answer within 120 s: {why_it_failed(run.logfile)}", 504)
            time.sleep(0.1)

    @staticmethod
    def _create_user(run: Run) -> None:
        # The password is on the client's standard input, in a statement MariaDB does not log
        # (no general log); it is made only of characters a quoted string holds as they are.
        statements = (
            f"CREATE DATABASE IF NOT EXISTS {MYSQL_DATABASE};\n"
            f"CREATE USER IF NOT EXISTS '{MYSQL_USER}'@'%' IDENTIFIED BY '{run.spec['password']}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{MYSQL_USER}'@'%' WITH GRANT OPTION;\n"
        )
        done = sql(run.dir, statements, as_node_user=True)
        if done.returncode != 0:
            raise InstanceError(f"creating the service's user failed: {done.stderr.strip()[:300]}")

    @staticmethod
    def _restore(run: Run, url: str) -> None:
        """The dump behind the presigned URL, loaded into the new server (never logged: it is signed)."""
        path = run.path("restore.sql")
        download(url, path, "the dump")
        try:
            argv = [CLIENT, f"--defaults-file={client_options(run.dir)}", MYSQL_DATABASE]
            with open(path, "rb") as dump, open(run.logfile, "ab") as out:
                done = subprocess.run(argv, stdin=dump, stdout=out, stderr=subprocess.STDOUT, env=run.env,
                                      timeout=RESTORE_TIMEOUT)  # fmt: skip
        finally:
            os.unlink(path)
        if done.returncode != 0:
            raise InstanceError(f"the dump did not load: {why_it_failed(run.logfile, 5)}")

    def ready(self, run: Run) -> bool:
        """Serving: it answers on its socket, and a member has joined its cluster (synced)."""
        if not run.spec.get("galera"):
            return sql(run.dir, "SELECT 1", timeout=5).returncode == 0
        return status(run.dir, ("wsrep_local_state_comment",)).get("wsrep_local_state_comment") == "Synced"

    def details(self, run: Run) -> dict:
        return ports_of(run) if run.spec.get("galera") else {}

    def replication(self, directory: str, host: str, port: int, record: dict) -> dict:
        """A member's Galera state (`synced`, `donor`, `joining`), its cluster's size and status,
        and the last transaction it committed (seqno); a lone server is its service's primary."""
        if not record.get("galera"):
            return {"role": "primary", "lag_s": 0}
        names = ("wsrep_local_state_comment", "wsrep_cluster_status", "wsrep_cluster_size", "wsrep_last_committed",
                 "wsrep_local_recv_queue")  # fmt: skip
        said = status(directory, names)
        if not said:
            return {"role": None, "detail": "the server does not answer"}
        state = said.get("wsrep_local_state_comment", "")
        primary = said.get("wsrep_cluster_status") == "Primary"
        role = ROLES.get(state) if primary else None
        answer = {
            "role": role,
            "state": state,
            "cluster": said.get("wsrep_cluster_status"),
            "cluster_size": int(said.get("wsrep_cluster_size") or 0),
            "seqno": int(said.get("wsrep_last_committed") or -1),
            "in_sync": role == "synced",
            # Galera commits on every member before it acknowledges: a synced member is behind by
            # the write sets it has certified but not yet applied, a fraction of a second.
            "lag_s": 0 if role == "synced" else None,
            "queue": int(said.get("wsrep_local_recv_queue") or 0),
        }
        if not primary:
            answer["detail"] = f"not in a primary component ({said.get('wsrep_cluster_status')})"
        return answer

    def stopped_state(self, directory: str, record: dict) -> dict:
        """A stopped member's position (seqno): the control plane starts a cluster stopped whole
        from its most advanced member. Galera writes it in grastate.dat at a clean stop; after a
        crash (-1 there) the server recovers it from its InnoDB log (--wsrep-recover)."""
        if not record.get("galera"):
            return {}
        data = os.path.join(directory, "data")
        try:
            with open(os.path.join(data, "grastate.dat")) as fh:
                state = dict(line.split(":", 1) for line in fh if ":" in line and not line.startswith("#"))
        except OSError:
            return {"seqno": -1}
        seqno = int(state.get("seqno", "-1").strip())
        if seqno >= 0:
            return {"seqno": seqno, "uuid": state.get("uuid", "").strip()}
        log = os.path.join(directory, "recover.log")
        try:
            subprocess.run(
                [
                    MARIADBD,
                    f"--defaults-file={os.path.join(directory, 'my.cnf')}",
                    "--wsrep-recover",
                    f"--log-error={log}",
                ],  # fmt: skip
                capture_output=True,
                env=instance_environ(os.path.join(directory, "home"), {}),
                timeout=120,
            )
            with open(log) as fh:
                found = re.findall(r"Recovered position: ([0-9a-f-]+):(-?\d+)", fh.read())
        except (OSError, subprocess.TimeoutExpired):
            found = []
        if not found:
            return {"seqno": -1}
        return {"seqno": int(found[-1][1]), "uuid": found[-1][0]}

    def marker(self, run: Run) -> str:
        return run.path("my.cnf")
