"""Code versions and instances on a backend node.

A code version is staged once per sha256 under ``<home>/versions/<sha256>/``: ``app/`` (the
unpacked archive) and, when the archive has a ``requirements.txt``, ``venv/``. An instance is
one gunicorn on a free local port, logging to ``<home>/instances/<name>/instance.log``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .archives import ArchiveError, extract_archive, valid_entry_point
from .procs import children, cmdline, free_port, pid_alive

log = logging.getLogger("conpaas_agent.instances")

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 2 * 1024 * 1024 * 1024
START_TIMEOUT = 30.0
# Gunicorn sync workers: each serves one request at a time, so this is an instance's concurrency.
# The agent reports it with the instance and the router makes it the server's connection limit
# (maxconn): excess requests wait in HAProxy's queue, not in the instance's listen backlog, where
# health checks would wait behind them.
WORKERS = 2
STOP_TIMEOUT = 20.0
# An instance's environment is an allow-list (instance_environ): nothing of the agent's own,
# which on the local cloud is the control plane's (`manage.py up` and whatever it was given).
INSTANCE_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTANCE_LOCALE = "C.UTF-8"
# What a build (the virtualenv and `pip install`, which runs the packages' build code) also
# takes from the agent: how this node reaches a package index.
BUILD_PASSTHROUGH_PREFIXES = ("PIP_",)
BUILD_PASSTHROUGH = {
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
}


class InstanceError(Exception):
    """The work failed; ``status`` is the HTTP status the agent answers (400, 404, 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# --- staging -----------------------------------------------------------------------------


def download(url: str, dest: str, expected_sha256: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise InstanceError("archive_url must be an http:// or https:// URL", 400)
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_ARCHIVE_BYTES:
                    raise InstanceError(f"the archive is larger than {MAX_ARCHIVE_BYTES} bytes")
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InstanceError(f"could not download the archive: {exc}") from exc
    if digest.hexdigest() != expected_sha256:
        raise InstanceError(f"archive sha256 mismatch: expected {expected_sha256}, downloaded {digest.hexdigest()}")


def unpack(archive: str, dest: str) -> None:
    """Unpack a zip or tar.gz into ``dest`` under the shared archive rules."""
    try:
        extract_archive(archive, dest, MAX_UNPACKED_BYTES)
    except ArchiveError as exc:
        raise InstanceError(f"the archive is refused: {exc}") from exc


def agent_site_packages() -> list[str]:
    """Where the agent's interpreter finds gunicorn; appended to a version's virtualenv."""
    paths = []
    for path in [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), *sys.path]:
        if path and os.path.isdir(path) and path.rstrip("/").endswith(("site-packages", "dist-packages")):
            if path not in paths:
                paths.append(path)
    return paths


def instance_environ(home: str, extra: dict[str, str], venv: str | None = None) -> dict[str, str]:
    """The whole environment of an instance (or a build): a fixed PATH (after the version's
    virtualenv's ``bin``, when it has one), a UTF-8 locale, ``home`` as HOME, then ``extra``.
    Nothing is inherited from the agent's own environment."""
    env = {
        "PATH": f"{venv}/bin:{INSTANCE_PATH}" if venv else INSTANCE_PATH,
        "LANG": INSTANCE_LOCALE,
        "LC_ALL": INSTANCE_LOCALE,
        "HOME": home,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def build_environ(home: str, venv: str) -> dict[str, str]:
    """An instance's environment plus the agent's pip and proxy settings, for a build."""
    passed = {
        key: value
        for key, value in os.environ.items()
        if key in BUILD_PASSTHROUGH or key.startswith(BUILD_PASSTHROUGH_PREFIXES)
    }
    return instance_environ(home, {**passed, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, venv)


def private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_control_socket: dict[str, bool] = {}


def gunicorn_has_control_socket(python: str, env: dict[str, str]) -> bool:
    if python not in _control_socket:
        try:
            help_text = subprocess.run(
                [python, "-m", "gunicorn", "--help"], capture_output=True, text=True, env=env, timeout=60
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            help_text = ""
        _control_socket[python] = "--no-control-socket" in help_text
    return _control_socket[python]


def answers_http(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/", headers={"User-Agent": "conpaas-agent-start-probe"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# --- instances ---------------------------------------------------------------------------


def validate_instance(body: object) -> dict:
    if not isinstance(body, dict):
        raise InstanceError("the body must be a JSON object", 400)
    unknown = set(body) - {"version", "label", "runtime", "entry_point", "archive_url", "archive_sha256", "env"}
    if unknown:
        raise InstanceError(f"unknown field(s): {', '.join(sorted(unknown))}", 400)
    for field in ("version", "archive_url", "archive_sha256"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise InstanceError(f"{field} is required (a string)", 400)
    runtime = body.get("runtime", "python")
    if runtime != "python":
        raise InstanceError(f"runtime {runtime!r} is not supported by this agent (only python)", 400)
    sha = body["archive_sha256"].lower()
    if not SHA256_RE.match(sha):
        raise InstanceError("archive_sha256 must be 64 hex digits", 400)
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and ENV_NAME_RE.match(k) and isinstance(v, str) and "\0" not in v for k, v in env.items()
    ):
        raise InstanceError("env must map variable names to strings", 400)
    # The control plane found the entry point when it validated the archive; the agent never
    # guesses one, so it runs nothing the archive rulebook refused.
    entry_point = body.get("entry_point")
    if not isinstance(entry_point, str) or not valid_entry_point(entry_point):
        raise InstanceError("entry_point is required: the WSGI application as module:callable", 400)
    label = body.get("label") or body["version"]
    if not isinstance(label, str):
        raise InstanceError("label must be a string", 400)
    return {
        "version": body["version"],
        "label": label,
        "runtime": runtime,
        "entry_point": entry_point,
        "archive_url": body["archive_url"],
        "archive_sha256": sha,
        "env": dict(env),
    }


class Instances:
    """Running instances of one node, persisted by the caller through ``save``.

    Instances listen on ``host``, the node's address (the router may be another node); they run
    at CPU priority ``nice`` below the agent and the router, so a busy app cannot starve them.
    A relative archive_url is a path of ``control_url``, the control plane as this node sees it."""

    def __init__(
        self, home: str, state: dict | None, save, host: str = "127.0.0.1", control_url: str = "", nice: int = 10
    ):
        self.home = home
        self.host = host
        self.control_url = control_url
        self.nice = nice
        self.versions_dir = os.path.join(home, "versions")
        self.instances_dir = os.path.join(home, "instances")
        os.makedirs(self.versions_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.instances_dir, mode=0o700, exist_ok=True)
        self._save = save
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._version_locks: dict[str, threading.Lock] = {}
        self.processes: dict[str, subprocess.Popen] = {}
        self.records: dict[str, dict] = {}
        for name, record in (state or {}).items():
            if self._adoptable(record):
                self.records[name] = record
                log.info("re-adopted instance %s (pid %s, port %s)", name, record["pid"], record["port"])
            else:
                log.info("instance %s (pid %s) is gone", name, record.get("pid"))

    def _adoptable(self, record: dict) -> bool:
        pid, port = record.get("pid"), record.get("port")
        if not isinstance(pid, int) or not pid_alive(pid):
            return False
        # Guards against a recycled pid: the process must still be our gunicorn.
        return f"{self.host}:{port}" in cmdline(pid)

    def state(self) -> dict:
        # dict() copies in one step, so a PUT in another thread cannot change it mid-iteration
        return {name: dict(record) for name, record in dict(self.records).items()}

    def _lock_for(self, table: dict, key: str) -> threading.Lock:
        with self._lock:
            return table.setdefault(key, threading.Lock())

    def alive(self, name: str) -> bool:
        record = self.records.get(name)
        if record is None:
            return False
        process = self.processes.get(name)
        if process is not None:
            return process.poll() is None
        return pid_alive(record["pid"])

    def public(self, name: str) -> dict:
        record = self.records[name]
        return {
            "name": name,
            "version": record["version"],
            "label": record["label"],
            "port": record["port"],
            "pid": record["pid"],
            # Instances started before it was recorded ran WORKERS workers too.
            "concurrency": record.get("concurrency", WORKERS),
            "state": "running" if self.alive(name) else "exited",
        }

    def all(self) -> dict[str, dict]:
        out = {}
        for name in sorted(dict(self.records)):
            try:
                out[name] = self.public(name)
            except KeyError:  # deleted meanwhile
                pass
        return out

    # staging
    def stage(self, sha: str, url: str, logfile: str) -> tuple[str, str]:
        """Stage a version once per sha256; returns (app directory, python executable)."""
        with self._lock_for(self._version_locks, sha):
            version_dir = os.path.join(self.versions_dir, sha)
            unpacked = os.path.join(version_dir, "app")
            if not os.path.isdir(unpacked):
                os.makedirs(version_dir, mode=0o700, exist_ok=True)
                tmp = tempfile.mkdtemp(prefix="stage-", dir=version_dir)
                try:
                    archive = os.path.join(tmp, "archive")
                    download(url, archive, sha)
                    unpack(archive, os.path.join(tmp, "app"))
                    os.replace(os.path.join(tmp, "app"), unpacked)
                    log.info("staged version %s", sha[:12])
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            app_dir = unpacked  # the shared rulebook wants the entry point at the archive's top
            python = sys.executable
            if os.path.isfile(os.path.join(app_dir, "requirements.txt")):
                python = self._virtualenv(version_dir, app_dir, logfile)
            return app_dir, python

    def _virtualenv(self, version_dir: str, app_dir: str, logfile: str) -> str:
        venv = os.path.join(version_dir, "venv")
        python = os.path.join(venv, "bin", "python")
        ready = os.path.join(venv, ".conpaas-ready")
        if os.path.exists(ready):
            return python
        shutil.rmtree(venv, ignore_errors=True)
        # The build's HOME (pip's cache) is the version's own, and goes with the build.
        build_home = private_dir(os.path.join(version_dir, "build-home"))
        try:
            self._build_virtualenv(venv, python, app_dir, logfile, build_environ(build_home, venv))
        finally:
            shutil.rmtree(build_home, ignore_errors=True)
        open(ready, "w").close()
        return python

    def _build_virtualenv(self, venv: str, python: str, app_dir: str, logfile: str, env: dict[str, str]) -> None:
        with open(logfile, "ab") as out:
            out.write(b"--- creating the virtualenv and installing requirements.txt\n")
            out.flush()
            steps = [[sys.executable, "-m", "venv", venv]]
            for argv in steps:
                result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=app_dir, timeout=600)
                if result.returncode != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    raise InstanceError(f"creating the virtualenv failed: {tail(logfile)}")
            # Append the agent's site-packages (gunicorn) after the venv's own: the version's
            # requirements win over what the agent has.
            purelib = subprocess.run(
                [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            ).stdout.strip()
            with open(os.path.join(purelib, "zz_conpaas_agent.pth"), "w") as fh:
                fh.write("".join(f"{path}\n" for path in agent_site_packages()))
            out.flush()
            result = subprocess.run(
                ["nice", "-n", str(self.nice), python, "-m", "pip", "install", "-r", "requirements.txt"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=app_dir,
                timeout=1800,
            )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise InstanceError(f"installing requirements.txt failed: {tail(logfile)}")

    # lifecycle
    def put(self, name: str, body: object) -> tuple[dict, bool]:
        """Stage and run one instance; returns (instance, created)."""
        if not NAME_RE.match(name):
            raise InstanceError(f"instance name must match {NAME_RE.pattern}", 400)
        spec = validate_instance(body)
        # The download link is not part of what runs (links expire and are re-signed): a PUT that
        # differs only in archive_url must leave the running instance alone.
        identity = {k: v for k, v in spec.items() if k != "archive_url"}
        spec_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        with self._lock_for(self._name_locks, name):
            record = self.records.get(name)
            if record and record.get("spec_hash") == spec_hash and self.alive(name):
                return self.public(name), False
            if record:
                self._stop(name)
            instance_dir = os.path.join(self.instances_dir, name)
            os.makedirs(instance_dir, mode=0o700, exist_ok=True)
            logfile = os.path.join(instance_dir, "instance.log")
            archive_url = urllib.parse.urljoin(self.control_url, spec["archive_url"])
            app_dir, python = self.stage(spec["archive_sha256"], archive_url, logfile)
            port = free_port(self.host)
            # The control plane's env (CONPAAS_ENV, CONPAAS_SERVICE, settings, links) may not
            # move the instance off its PORT.
            home = private_dir(os.path.join(instance_dir, "home"))
            venv = os.path.dirname(os.path.dirname(python)) if python != sys.executable else None
            env = instance_environ(home, {"CONPAAS_VERSION": spec["label"], **spec["env"], "PORT": str(port)}, venv)
            argv = [
                "nice",
                "-n",
                str(self.nice),
                python,
                "-m",
                "gunicorn",
                "--bind",
                f"{self.host}:{port}",
                "--workers",
                str(WORKERS),
                "--graceful-timeout",
                "20",
                "--chdir",
                app_dir,
            ]
            if gunicorn_has_control_socket(python, env):
                # Newer gunicorn opens ~/.gunicorn/gunicorn.ctl, one path for every instance.
                argv.append("--no-control-socket")
            argv.append(spec["entry_point"])
            with open(logfile, "ab") as out:
                out.write(f"--- starting {name} (version {spec['version']}) on port {port}\n".encode())
                out.flush()
                # Same process group as the agent: destroying the node kills the whole group.
                process = subprocess.Popen(
                    argv,
                    cwd=app_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                )
            deadline = time.monotonic() + START_TIMEOUT
            # Listening is not enough: gunicorn binds before its workers import the app, so
            # wait for an HTTP answer (any status) or for the process to exit.
            while not (port_open(self.host, port) and answers_http(self.host, port)):
                if process.poll() is not None:
                    raise InstanceError(f"instance {name} exited at start (code {process.returncode}): {tail(logfile)}")
                if time.monotonic() > deadline:
                    self._terminate(process.pid, process)
                    raise InstanceError(f"instance {name} did not listen within {START_TIMEOUT:.0f} s: {tail(logfile)}")
                time.sleep(0.05)
            self.processes[name] = process
            self.records[name] = {
                **spec,
                "port": port,
                "pid": process.pid,
                "concurrency": WORKERS,
                "spec_hash": spec_hash,
                "started": time.time(),
            }
            self._save()
            log.info("started instance %s version %s on port %s (pid %s)", name, spec["version"], port, process.pid)
            return self.public(name), True

    def get(self, name: str) -> dict:
        if name not in self.records:
            raise InstanceError(f"no instance named {name}", 404)
        return self.public(name)

    def health(self, name: str, path: str = "/") -> dict:
        record = self.records.get(name)
        if record is None:
            raise InstanceError(f"no instance named {name}", 404)
        if not path.startswith("/"):
            raise InstanceError("the health path must start with /", 400)
        if not self.alive(name):
            return {"ok": False, "status": None, "detail": "the instance process has exited"}
        url = f"http://{self.host}:{record['port']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            return {"ok": False, "status": None, "detail": f"no answer: {exc}"}
        return {"ok": status < 500, "status": status, "detail": f"GET {path} answered {status}"}

    def delete(self, name: str) -> None:
        with self._lock_for(self._name_locks, name):
            if name in self.records:
                self._stop(name)
                self._save()

    def _stop(self, name: str) -> None:
        record = self.records.pop(name)
        process = self.processes.pop(name, None)
        self._terminate(record["pid"], process)
        log.info("stopped instance %s (pid %s)", name, record["pid"])

    @staticmethod
    def _terminate(pid: int, process: subprocess.Popen | None) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT seconds."""

        def gone() -> bool:
            return process.poll() is not None if process is not None else not pid_alive(pid)

        if gone():
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        resignal = time.monotonic() + 1
        while not gone():
            if time.monotonic() > resignal:
                # gunicorn can fork a worker just after its master took SIGTERM; that worker
                # never hears of it and the master waits out its graceful timeout. Tell the
                # workers directly (they finish their current request, then exit).
                for child in children(pid):
                    try:
                        os.kill(child, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                resignal = time.monotonic() + 1
            if time.monotonic() > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                if process is not None:
                    process.wait(5)
                return
            time.sleep(0.05)
