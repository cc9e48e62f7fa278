"""Local platform harness for tests and benchmarks.

A real control plane (`manage.py up`: gunicorn + django-q2 workers) on a free port with its own
CONPAAS_HOME, driven only through the REST API, with real local nodes (agents, HAProxy,
gunicorn instances). Everything started here is stopped here, by PID."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from images.conpaas_agent.procs import free_port
from images.conpaas_agent.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]


class ControlPlane:
    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CONPAAS_"))},
            "CONPAAS_HOME": str(home),
            "CONPAAS_URL": self.url,
            "CONPAAS_HEALTH_TIMEOUT": "20",
            "CONPAAS_DRAIN_TIMEOUT": "5",
            "PYTHONUNBUFFERED": "1",
        }
        self.process: subprocess.Popen | None = None
        self.log = open(home / "control-plane.log", "ab")

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
            os.killpg(self.process.pid, signal.SIGKILL)  # the group this harness started
            self.process.wait()

    def create_user(self, username: str, password: str = "pw-secret-1", staff: bool = False) -> None:
        code = (
            "from django.contrib.auth import get_user_model; U = get_user_model(); "
            f"u, _ = U.objects.get_or_create(username={username!r}); u.set_password({password!r}); "
            f"u.is_staff = u.is_superuser = {staff!r}; u.save()"
        )
        self.manage("shell", "-c", code)

    def client(self, username: str, password: str = "pw-secret-1") -> "Api":
        self.create_user(username, password)
        token = requests.post(
            self.url + "/api/v1/auth/token/", json={"username": username, "password": password}, timeout=10
        ).json()["token"]
        return Api(self.url, token)


class Api:
    """A REST client for one user; paths are the contract's literal URLs."""

    def __init__(self, base: str, token: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

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

    def deploy(self, service_id: int, environment: str, version_id: int) -> dict:
        response = self.patch(
            f"/api/v1/services/{service_id}/environments/{environment}/", json={"version": version_id}
        )
        assert response.status_code == 202, response.text
        return self.wait_operation(response.json())
