"""Local platform harness for tests and benchmarks.

A real control plane (`manage.py up`: gunicorn + django-q2 workers) on a free port with its own
CONPAAS_HOME, driven only through the REST API, with real local nodes (agents, HAProxy,
gunicorn instances). Everything started here is stopped here, by PID.

Its database is its own, like its home: SQLite in CONPAAS_HOME, or, when DATABASE_URL names a
PostgreSQL server, a database created here on that server (`<name>_cp_<random>`) and dropped by
close() (or at exit). When CONPAAS_REDIS_URL is set its task workers use that Redis as their
broker, under a queue name of their own, so control planes sharing one Redis never take each
other's tasks."""

import atexit
import os
import secrets
import signal
import subprocess
import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from conpaas_common.procs import free_port, group_members, pid_alive
from conpaas_common.waiting import wait_until
from services.clouds.local import LocalNodeDriver

REPO = Path(__file__).resolve().parents[1]
TEST_PACKAGE_CACHE = REPO / "var" / "test-package-cache"


POSTGRES_ENGINES = ("django.db.backends.postgresql", "django.contrib.gis.db.backends.postgis")


def _postgres_admin(config: dict):
    """An autocommit connection to the maintenance database of the server `config` names."""
    import psycopg  # only when a PostgreSQL server is used

    return psycopg.connect(
        host=config["HOST"] or None,
        port=config["PORT"] or None,
        user=config["USER"] or None,
        password=config["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


def create_postgres_database(database_url: str, suffix: str) -> str:
    """Create `<name>_<suffix>` next to the database DATABASE_URL names; return its URL."""
    import dj_database_url

    config = dj_database_url.parse(database_url)
    name = f"{config['NAME'][: 62 - len(suffix)]}_{suffix}"
    with _postgres_admin(config) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(database_url)._replace(path="/" + name))


def drop_postgres_database(database_url: str) -> None:
    import dj_database_url

    config = dj_database_url.parse(database_url)
    with _postgres_admin(config) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{config["NAME"]}" WITH (FORCE)')


def _forget_redis_queue(redis_url: str, queue: str) -> None:
    """Delete what django-q2 kept in Redis under this queue name (the queue, cluster stats)."""
    import redis

    connection = redis.from_url(redis_url)
    try:
        keys = list(connection.scan_iter(match=f"django_q:{queue}:*"))
        if keys:
            connection.delete(*keys)
    finally:
        connection.close()


def child_pids(pid: int) -> list[int]:
    """The live processes that `pid` started (Linux: /proc/PID/task/*/children)."""
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass  # that thread, or the process, has just ended
    return pids


def descendants(pid: int) -> list[int]:
    children = child_pids(pid)
    return children + [grandchild for child in children for grandchild in descendants(child)]


class ControlPlane:
    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Which database and broker: what the tests run on (the environment), but this plane's own.
        # Under the run's own queue name (CONPAAS_QUEUE_NAME from ./run tests), so what an interrupted
        # run leaves in Redis is found and dropped by drop_run_leftovers.
        self.queue = f"{os.environ.get('CONPAAS_QUEUE_NAME', 'conpaas')}-{secrets.token_hex(4)}"
        self.database_url = None
        self.redis_url = os.environ.get("CONPAAS_REDIS_URL") or None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CONPAAS_", "DATABASE_URL"))},
            "CONPAAS_HOME": str(home),
            "CONPAAS_URL": self.url,
            "CONPAAS_HEALTH_TIMEOUT": "20",
            "CONPAAS_DRAIN_TIMEOUT": "5",
            "CONPAAS_QUEUE_NAME": self.queue,
            # Every control plane of a test run shares one package cache: a build fetches from
            # the index once per run, whichever plane asks first.
            "CONPAAS_PACKAGE_CACHE": str(TEST_PACKAGE_CACHE),
            # No platform backup store: with one, every data service a test makes would take a first
            # backup at once and verify it on a scratch node (the default policy). Planes that test
            # the store turn it on.
            "CONPAAS_BACKUP_STORE": "off",
            "PYTHONUNBUFFERED": "1",
        }
        if self.redis_url:
            self.env["CONPAAS_REDIS_URL"] = self.redis_url
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            import dj_database_url

            if dj_database_url.parse(database_url)["ENGINE"] in POSTGRES_ENGINES:
                self.database_url = create_postgres_database(database_url, f"cp_{secrets.token_hex(4)}")
                self.env["DATABASE_URL"] = self.database_url
            # any other DATABASE_URL (SQLite): this plane keeps its SQLite in its own home
        self._closed = False
        atexit.register(self.close)
        self.process: subprocess.Popen | None = None
        self.log = open(home / "control-plane.log", "ab")

    def close(self) -> None:
        """Drop what this plane had outside its home: its PostgreSQL database, its Redis keys.
        After stop() (and `manage.py down`); idempotent, and run at exit if not called."""
        if self._closed:
            return
        self._closed = True
        if self.database_url:
            drop_postgres_database(self.database_url)
        if self.redis_url:
            _forget_redis_queue(self.redis_url, self.queue)

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "manage.py"), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "up", "--bind", f"127.0.0.1:{self.port}"],
            env=self.env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=60, message="the control plane to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"manage.py up exited with {self.process.returncode}; see {self.log.name}")
        try:
            return requests.get(self.url + "/admin/login/", timeout=5).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            # The group this harness started, and the ones `manage.py up` started its parts in.
            for group in [*child_pids(self.process.pid), self.process.pid]:
                try:
                    os.killpg(group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait()

    def part(self, word: str) -> int | None:
        """The PID of the child of `manage.py up` whose command line holds `word` (qcluster, gunicorn)."""
        for pid in child_pids(self.process.pid):
            try:
                # Split on spaces too: a process may have rewritten its title (setproctitle).
                if word in Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ").split():
                    return pid
            except FileNotFoundError:
                pass
        return None

    @property
    def package_proxy_port(self) -> int:
        """The port on 127.0.0.1 of the package proxy `manage.py up` runs (services/package_proxy.py)."""
        pid = self.part("services.package_proxy_wsgi:application")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        return int(argv[argv.index("--bind") + 1].rsplit(":", 1)[1])

    def node_pids(self, node_name: str) -> list[int]:
        """Every live process of one of this plane's local nodes: its cgroups' and its user's
        when nodes are isolated, else its process group's."""
        isolation = LocalNodeDriver(str(self.home / "nodes")).isolation
        if isolation is not None:
            slot = isolation.slot_of(node_name)
            return [pid for pid in isolation.pids(slot) if pid_alive(pid)] if slot else []
        try:
            return group_members(int((self.home / "nodes" / node_name / "agent.pid").read_text()))
        except (OSError, ValueError):
            return []

    def kill_node(self, node_name: str) -> int:
        """kill -9 every process of the node, by pid, until none is left; returns how many."""
        killed = set()

        def gone() -> bool:
            pids = self.node_pids(node_name)
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            return not pids

        wait_until(gone, timeout=10, interval=0.05, message=f"every process of {node_name} to die")
        return len(killed)

    def create_user(self, username: str, password: str = "pw-secret-1", staff: bool = False) -> None:
        # The password is set only when it differs: a new password revokes the user's API tokens,
        # and other fixtures may still hold one of them.
        code = (
            "from django.contrib.auth import get_user_model; U = get_user_model(); "
            f"u, _ = U.objects.get_or_create(username={username!r}); "
            f"u.check_password({password!r}) or u.set_password({password!r}); "
            f"u.is_staff = u.is_superuser = {staff!r}; u.save()"
        )
        self.manage("shell", "-c", code)

    def client(self, username: str, password: str = "pw-secret-1") -> "Api":
        self.create_user(username, password)
        token = requests.post(
            self.url + "/api/v1/auth/token/", json={"username": username, "password": password}, timeout=10
        ).json()["token"]
        return Api(self.url, token)


@contextmanager
def running_control_plane(home: Path, **env: str):
    """A control plane of its own in `home`, `env` added to its environment, started; after:
    stopped, its nodes destroyed, its database dropped, even when the start fails half-way (it
    still leaves processes to stop)."""
    plane = ControlPlane(home)
    plane.env.update(env)
    plane.manage("migrate", "--noinput")
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        plane.manage("down", check=False)
        plane.close()


class Api:
    """A REST client for one user; paths are the contract's literal URLs."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        # A GET on a keep-alive connection the server closed meanwhile (gunicorn's keep-alive
        # timeout, between two polls) is sent again on a new one, as a browser does.
        retry = urllib3.util.Retry(total=2, connect=0, read=2, status=0, allowed_methods={"GET", "HEAD"})
        self.session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))

    def __getattr__(self, method):
        def call(path, **kwargs):
            kwargs.setdefault("timeout", 60)
            return self.session.request(method.upper(), self.base + path, **kwargs)

        return call

    def wait_operation(self, operation: dict, timeout: float = 90) -> dict:
        def finished():
            current = self.get(f"/api/v1/operations/{operation['id']}/").json()
            return current if current["state"] in ("succeeded", "failed") else None

        return wait_until(finished, timeout=timeout, interval=0.2, message=f"operation {operation['id']}")

    def create_service(self, name: str, runtime: str = "python") -> dict:
        response = self.post("/api/v1/services/", json={"name": name, "runtime": runtime})
        assert response.status_code == 201, response.text
        service = response.json()
        wait_until(
            lambda: self.get(f"/api/v1/services/{service['id']}/").json()["state"] == "running",
            timeout=60,
            message=f"service {name} to run",
        )
        return self.get(f"/api/v1/services/{service['id']}/").json()

    def upload(self, service_id: int, archive: bytes, label: str | None = None, filename: str = "app.zip"):
        data = {"label": label} if label else {}
        return self.post(f"/api/v1/services/{service_id}/versions/", files={"archive": (filename, archive)}, data=data)

    def deploy(self, service_id: int, environment: str, version_id: int, timeout: float = 90) -> dict:
        response = self.patch(
            f"/api/v1/services/{service_id}/environments/{environment}/", json={"version": version_id}
        )
        assert response.status_code == 202, response.text
        return self.wait_operation(response.json(), timeout=timeout)

    @contextmanager
    def serving(self, name: str, runtime: str, archive: bytes, filename: str):
        """A new service with `archive` (labelled `name`) deployed in production: yields (service,
        version) and deletes the service after, even on failure."""
        service = self.create_service(name, runtime)
        try:
            version = self.upload(service["id"], archive, name, filename=filename)
            assert version.status_code == 201, version.text
            operation = self.deploy(service["id"], "production", version.json()["id"])
            assert operation["state"] == "succeeded", operation["error"]
            yield service, version.json()
        finally:
            self.wait_operation(self.delete(f"/api/v1/services/{service['id']}/").json())


def drop_run_leftovers(postgres_url: str | None, redis_url: str | None, run_id: str) -> list[str]:
    """After a test run (`./run tests`): drop the PostgreSQL databases named by the run's id, or
    by it and `_…`, with or without pytest-django's `test_`, and its Redis keys; return what went.
    Normally nothing is left; this is for a run that was interrupted or crashed."""
    dropped = []
    if postgres_url:
        import dj_database_url

        config = dj_database_url.parse(postgres_url.rstrip("/") + "/postgres")
        with _postgres_admin(config) as admin:
            names = [
                name
                for (name,) in admin.execute(
                    "SELECT datname FROM pg_database WHERE datname IN (%s, %s)"
                    " OR starts_with(datname, %s) OR starts_with(datname, %s)",
                    (run_id, f"test_{run_id}", f"{run_id}_", f"test_{run_id}_"),
                )
            ]
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                dropped.append(name)
    if redis_url:
        _forget_redis_queue(redis_url, run_id)
        _forget_redis_queue(redis_url, f"{run_id}-*")  # the control planes' own queues (a glob)
    return dropped
