"""Builds: what a version's dependencies cost, at its first deploy, its next ones and on new nodes.

The benchmark runs in phases (`--phase`, default all), each on what it needs and each printing
its own figures and target; the run passes when every phase passes. A phase is one entry of
PHASES and one function `run_<name>(args) -> bool` whose docstring's first line is its target.

`staging`: Debian's MediaWiki packed as examples/mediawiki/build.py packs it (about 25,000
members), unpacked by the node agent's own code (conpaas_agent.instances.unpack: every member
checked) from the zip and from a tar.gz of the same tree, beside GNU tar (and unzip, when
installed) on the same archives, on this machine's disk (/var/tmp); best of `--staging-runs`
(the first unpacks after the tree is packed and removed are slow here, the system's tools' too).
Target: the node's unpack of each archive within 2x the time of the system's tool.

`python`: a small real Django project (settings by django-environ and dj-database-url,
WhiteNoise serving a stylesheet, psycopg's binary build imported) whose requirements.txt names
Django>=5.2,<6, psycopg[binary], whitenoise, dj-database-url and django-environ. Its private
platform starts with an empty package cache of its own (CONPAAS_PACKAGE_CACHE: a new temporary
folder, removed at the end), so the first build downloads every package through the package
proxy. Timed, through the REST API only (and the nodes' agents, as an operator on this machine):
- the first build and deploy of v1 to production (the version's `build` field: seconds, size;
  the deploy operation's events), with the production URL answering `ok v1`;
- v2, the same requirements and other code, deployed to production (`--v2-env`): its build step
  (reused: no build), and the whole deploy;
- scaling the backend 1 -> `--nodes` (4): the operation, and for each added node the time from
  its `node … is up` event to its production instance being healthy in the router (HAProxy sends
  it production traffic), polled every `--poll` s on the router's agent (GET /v1/proxy); beside
  it, when the instance was started (its event), when it first answered on its own address and
  when production traffic (a request every 50 ms through the router) first reached it. Every
  node is then asked directly, and through the router, for the version.
Where the time of each node goes is read from its agent's log (the PUT of the instance, the
staging of the archive and of the build), the build's files (their inode change times: when the
unpack wrote the first and the last), the virtualenv's files, gunicorn's and its workers' start
times (/proc) and the router's agent log (the server added, the PUT of the routes answered once
its first check ran); with, as evidence of what the waits are, the node agent's threads' CPU
time (user, kernel) and time waiting for a CPU (schedstat), and the machine's stall shares
(/proc/pressure) over the unpack. With `--keep` (or on failure) the nodes' logs are copied to
`<home>/evidence-nodes/` (an isolated node's home is outside CONPAAS_HOME).
Targets: the second version's build <= 5 s; each added node serving <= 2 s after it is up.

Run: .venv/bin/python bench/build.py [--phase python] [--nodes 4] [--v2-env production] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

from tests.apps import zip_archive  # noqa: E402

# --------------------------------------------------------------------------------------------
# the app: a small real Django project

REQUIREMENTS = "Django>=5.2,<6\npsycopg[binary]\nwhitenoise\ndj-database-url\ndjango-environ\n"

WSGI = """\
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")
application = get_wsgi_application()
"""

SETTINGS = """\
import os
from pathlib import Path

import dj_database_url
import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env(DEBUG=(bool, False))

SECRET_KEY = env("SECRET_KEY", default="bench-only-not-a-secret")
DEBUG = env("DEBUG")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"])
INSTALLED_APPS = ["django.contrib.staticfiles"]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "benchsite.urls"
WSGI_APPLICATION = "wsgi.application"
# DATABASE_URL when a database is linked; a file in the instance's own HOME otherwise.
DATABASES = {
    "default": dj_database_url.config(
        default="sqlite:///" + os.path.join(os.environ.get("HOME", "/tmp"), "db.sqlite3"), conn_max_age=60
    )
}
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
USE_TZ = True
"""

URLS = """\
from django.urls import path

from benchsite import views

urlpatterns = [path("", views.index), path("deps/", views.deps)]
"""

VIEWS = """\
import importlib.metadata
import os

import psycopg
from django.db import connection
from django.http import HttpResponse

RELEASE = "{release}"
PACKAGES = ("Django", "psycopg", "psycopg-binary", "whitenoise", "dj-database-url", "django-environ")


def served_by():
    # The instance's HOME is <node home>/instances/<instance name>/home.
    return os.path.basename(os.path.dirname(os.environ.get("HOME", "").rstrip("/"))) or "?"


def index(request):
    response = HttpResponse(f"ok {{RELEASE}}\\n", content_type="text/plain")
    response["X-Served-By"] = served_by()
    return response


def deps(request):
    lines = [f"{{name}} {{importlib.metadata.version(name)}}" for name in PACKAGES]
    lines.append(f"psycopg implementation {{psycopg.pq.__impl__}}; database vendor {{connection.vendor}}")
    return HttpResponse("\\n".join(lines) + "\\n", content_type="text/plain")
"""

STYLESHEET = "body { font-family: sans-serif; }\n"


def django_app(release: str) -> bytes:
    """The project, answering `ok <release>` at /; releases differ in code only."""
    return zip_archive(
        {
            "wsgi.py": WSGI,
            "requirements.txt": REQUIREMENTS,
            "benchsite/__init__.py": "",
            "benchsite/settings.py": SETTINGS,
            "benchsite/urls.py": URLS,
            "benchsite/views.py": VIEWS.format(release=release),
            "staticfiles/bench.css": STYLESHEET,
        }
    )


# --------------------------------------------------------------------------------------------
# reading times: events, agent logs, /proc

AGENT_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ [\w.]+: (.*)$")


def event_time(event: dict) -> float:
    return datetime.fromisoformat(event["created"].replace("Z", "+00:00")).timestamp()


def events(api, sid: int) -> list[dict]:
    """The service's events, oldest first, each with `t` (seconds since the epoch)."""
    response = api.get(f"/api/v1/services/{sid}/events/")
    response.raise_for_status()
    found = [{**event, "t": event_time(event)} for event in response.json()]
    return sorted(found, key=lambda e: (e["t"], e["id"]))


def agent_log(config: dict) -> list[tuple[float, str]]:
    """(time, message) of each line of a node's agent log (its local time, milliseconds)."""
    lines = []
    try:
        text = (Path(config["home"]) / "agent.log").read_text(errors="replace")
    except OSError:
        return lines
    for line in text.splitlines():
        match = AGENT_LOG_LINE.match(line)
        if match:
            seconds = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
            lines.append((seconds, match[3]))
    return lines


def first_after(lines: list[tuple[float, str]], pattern: str, since: float) -> float | None:
    wanted = re.compile(pattern)
    return next((t for t, message in lines if t >= since and wanted.search(message)), None)


def process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch, 10 ms resolution), from /proc: its start
    in ticks since boot, against /proc/uptime read now (btime is rounded to the second)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return time.time() - uptime + int(fields[19]) / benchlib.CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def ctimes(folder: Path) -> tuple[float, float, float] | None:
    """The first and last inode change among the files of a folder (when an unpack wrote its
    first and its last file), and the longest pause between two of them."""
    times = sorted(p.stat().st_ctime for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if not times:
        return None
    return times[0], times[-1], max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def agent_instances(config: dict) -> dict:
    status, payload = benchlib.agent_call(config, "GET", "/v1/status", timeout=5)
    return (payload.get("instances") or {}) if status == 200 and isinstance(payload, dict) else {}


def instance_start(config: dict, name: str, version_sha: str, since: float) -> dict:
    """Marks (seconds since the epoch) of one instance's start on its node, from the agent's log,
    the version's virtualenv and /proc: the PUT received and answered, the archive and the build
    staged (downloaded, checked, unpacked), the virtualenv made, gunicorn spawned, ready."""
    lines = agent_log(config)
    marks: dict[str, float | None] = {}
    put = re.compile(rf"^PUT /v1/instances/{re.escape(name)} -> (\d+) \((\d+) ms\)")
    for t, message in lines:
        match = put.match(message)
        if t >= since and match:
            marks["put answered"], marks["put received"] = t, t - int(match[2]) / 1000
            break
    begin = marks.get("put received") or since
    sha12 = re.escape(version_sha[:12])
    marks["archive staged"] = first_after(lines, rf"^staged app of version {sha12}", begin)
    marks["build staged"] = first_after(lines, rf"^staged build-\w+ of version {sha12}", begin)
    version_dir = Path(config["home"]) / "versions" / version_sha
    builds = sorted(version_dir.glob("build-*"))
    if builds and (written := ctimes(builds[0])):
        marks["build unpack begun"], marks["build unpack ended"], marks["longest pause"] = written
    venvs = sorted(version_dir.glob("venv-*"))
    if venvs:
        marks["venv begun"] = mtime(venvs[0] / "pyvenv.cfg")
        marks["venv ready"] = mtime(venvs[0] / ".conpaas-ready")
    pid = (agent_instances(config).get(name) or {}).get("pid")
    marks["gunicorn spawned"] = process_start(pid) if pid else None
    workers = [t for t in (process_start(child) for child in children(pid)) if t] if pid else []
    marks["workers forked"] = min(workers) if workers else None
    marks["instance ready"] = first_after(lines, rf"^started instance {re.escape(name)} ", begin)
    return marks


# The segments between marks, in order; each is printed when both its ends are known.
START_SEGMENTS = [
    ("put received", "archive staged", "archive: download, sha256, unpack"),
    ("archive staged", "build unpack begun", "build: download and sha256 (until its first file is written)"),
    ("build unpack begun", "build staged", "build: unpack (first file to staged)"),
    ("build staged", "venv ready", "virtualenv (venv --without-pip, .pth files)"),
    ("venv ready", "gunicorn spawned", "from the virtualenv to gunicorn's spawn (the `gunicorn --help` probe)"),
    ("gunicorn spawned", "workers forked", "gunicorn's master: start to its workers' fork"),
    ("workers forked", "instance ready", "a worker loads the app (Django) and answers the agent's probe"),
    ("instance ready", "put answered", "the agent's answer"),
]


def print_segments(marks: dict, segments: list[tuple[str, str, str]], indent: str = "    ") -> None:
    for start, end, what in segments:
        a, b = marks.get(start), marks.get(end)
        if a is not None and b is not None:
            say(f"{indent}{b - a:7.2f} s  {what}")
        else:
            missing = start if a is None else end
            say(f"{indent}{'?':>7}    {what} (no '{missing}' mark)")


def build_file(home: Path, sha256: str) -> Path | None:
    """The stored build with that sha256 (CONPAAS_HOME/builds/)."""
    import hashlib

    for path in sorted((home / "builds").glob("*")):
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith((".log", ".lock")):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            if digest.hexdigest() == sha256:
                return path
    return None


def build_contents(path: Path) -> tuple[int, int]:
    """How many files a build holds, and their bytes unpacked."""
    with tarfile.open(path, "r:gz") as tar:
        files = [m for m in tar.getmembers() if m.isfile()]
    return len(files), sum(m.size for m in files)


def folder_bytes(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


# --------------------------------------------------------------------------------------------
# HTTP


def get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, body, X-Served-By) of a GET on a new connection."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return response.status, body, response.getheader("X-Served-By") or ""
    finally:
        connection.close()


class Traffic(threading.Thread):
    """A request every `interval` s to the production URL, on a new connection each: when each
    instance first answered production, and the failures."""

    def __init__(self, url: str, expected: str, interval: float = 0.05):
        super().__init__(daemon=True)
        self.url, self.expected, self.interval = url, expected, interval
        self.first: dict[str, float] = {}
        self.requests, self.failures = 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = time.time()
            try:
                status, body, served_by = get(self.url, timeout=10)
                if status != 200 or body != self.expected:
                    self.failures.append(f"HTTP {status} {body[:60]!r}")
                else:
                    self.first.setdefault(served_by, time.time())
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.requests += 1
            self.stopping.wait(max(0.0, self.interval - (time.time() - sent)))

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)


def pressure_totals() -> tuple[float, float, float]:
    """The machine's stall totals so far, in seconds (/proc/pressure: PSI): some task waiting for
    a CPU, some task waiting for I/O, every task waiting for I/O."""
    found = []
    for resource, kind in (("cpu", "some"), ("io", "some"), ("io", "full")):
        try:
            line = next(x for x in Path(f"/proc/pressure/{resource}").read_text().splitlines() if x.startswith(kind))
            found.append(int(line.rsplit("total=", 1)[1]) / 1e6)
        except (OSError, StopIteration, ValueError):
            found.append(float("nan"))
    return found[0], found[1], found[2]


def thread_times(pid: int) -> dict[int, tuple[float, float, float, float]]:
    """Per thread of a process: seconds on a CPU and waiting for one (schedstat), and seconds in
    user and in kernel mode (stat)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            on_cpu, waiting = (int(x) / 1e9 for x in (task / "schedstat").read_text().split()[:2])
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            user, system = (int(fields[i]) / benchlib.CLOCK_TICKS for i in (11, 12))
            found[int(task.name)] = (on_cpu, waiting, user, system)
        except (OSError, ValueError, IndexError):
            continue
    return found


class Watch(threading.Thread):
    """Every `interval` s: the router's view of production's servers (GET /v1/proxy on its agent:
    when each was first listed, and first healthy), and each new backend node's production
    instance (GET /v1/status on its agent, then a GET of its own address: when it first answered).
    Also, as evidence of where waits come from: the machine's stall totals (PSI) and each new
    node's agent threads' CPU time and time waiting for a CPU (a staging thread ends with its PUT,
    so it is sampled while it lives)."""

    def __init__(self, env, proxy: dict, old_nodes: set[str], expected: str, interval: float):
        super().__init__(daemon=True)
        self.env, self.proxy, self.old, self.expected, self.interval = env, proxy, old_nodes, expected, interval
        self.listed: dict[str, float] = {}
        self.healthy: dict[str, float] = {}
        self.answered: dict[str, float] = {}
        self.addresses: dict[str, str] = {}  # instance name -> its URL
        self.errors: list[str] = []
        self.pressure: list[tuple[float, float, float, float]] = []  # (time, cpu some, io some, io full)
        self.threads: dict[str, dict[int, tuple]] = {}  # node -> thread -> (cpu, wait, user, kernel)
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            began = time.time()
            self.pressure.append((began, *pressure_totals()))
            try:
                self.look()
            except Exception as exc:  # noqa: BLE001 - a watcher notes and goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stopping.wait(max(0.0, self.interval - (time.time() - began)))

    def look(self) -> None:
        status, payload = benchlib.agent_call(self.proxy, "GET", "/v1/proxy", timeout=5)
        now = time.time()
        if status == 200 and isinstance(payload, dict):
            key = (payload.get("routes") or {}).get("production")
            servers = ((payload.get("backends") or {}).get(key) or {}).get("servers") or {}
            for name, server in servers.items():
                self.listed.setdefault(name, now)
                if server.get("healthy"):
                    self.healthy.setdefault(name, now)
        for config in self.env.node_configs():
            node = config.get("name")
            if node in self.old or "backend" not in config.get("roles", []):
                continue
            try:
                pid = int((Path(config["home"]) / "agent.pid").read_text())
                self.threads.setdefault(node, {}).update(thread_times(pid))
            except (OSError, ValueError):
                pass
            if not any(name.startswith(f"{node}-") for name in self.addresses):
                try:
                    instances = agent_instances(config)
                except Exception:  # noqa: BLE001 - not up yet
                    continue
                host = config["agent_bind"].rsplit(":", 1)[0]
                for name, instance in instances.items():
                    if instance.get("label") == self.expected:
                        self.addresses[name] = f"http://{host}:{instance['port']}/"
            for name, url in list(self.addresses.items()):
                if name.startswith(f"{node}-") and name not in self.answered:
                    try:
                        if get(url, timeout=2)[1] == f"ok {self.expected}\n":
                            self.answered[name] = time.time()
                    except (OSError, http.client.HTTPException):
                        pass

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=15)

    def stalls(self, start: float | None, end: float | None) -> str:
        """The machine's stall shares between two times, from the samples around them."""
        if start is None or end is None:
            return "?"
        before = [p for p in self.pressure if p[0] <= start]
        after = [p for p in self.pressure if p[0] >= end]
        if not before or not after or after[0][0] <= before[-1][0]:
            return "?"
        a, b = before[-1], after[0]
        span = b[0] - a[0]
        cpu, io, io_full = ((b[i] - a[i]) / span * 100 for i in (1, 2, 3))
        return f"over {span:.1f} s around it: CPU-waiting {cpu:.0f}%, I/O-waiting {io:.0f}% (all tasks: {io_full:.0f}%)"

    def agent_cpu(self, node: str) -> str:
        threads = self.threads.get(node) or {}
        if not threads:
            return "?"
        on_cpu, waiting, user, system = (sum(t[i] for t in threads.values()) for i in range(4))
        return (
            f"on a CPU {on_cpu:.2f} s (user {user:.2f}, kernel {system:.2f}), waiting for a CPU {waiting:.2f} s "
            f"({len(threads)} threads seen)"
        )


# --------------------------------------------------------------------------------------------
# the python phase


def deploy(api, sid: int, environment: str, version: dict, timeout: float) -> tuple[dict, float]:
    """benchlib.deploy, timed: the operation as it ended, and the seconds from the PATCH to its end."""
    began = time.monotonic()
    operation = benchlib.deploy(api, sid, environment, version, timeout=timeout)
    return operation, time.monotonic() - began


def upload(api, sid: int, release: str) -> dict:
    response = api.upload(sid, django_app(release), release, filename=f"{release}.zip")
    if response.status_code != 201:
        raise RuntimeError(f"upload of {release} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def version_of(api, sid: int, version_id: int) -> dict:
    response = api.get(f"/api/v1/services/{sid}/versions/{version_id}/")
    response.raise_for_status()
    return response.json()


def print_events(found: list[dict], zero: float, width: int = 150) -> None:
    for event in found:
        message = event["message"].replace("\n", " ")
        say(f"    +{event['t'] - zero:7.2f} s  {event['action']:<15} {message[:width]}")


def first_deploy_breakdown(env, sid: int, version: dict, operation: dict, found: list[dict]) -> None:
    """Where v1's deploy went: its events, then the node's start of the instance."""
    zero = next(e["t"] for e in found)
    say(f"  events of the deploy (from the request, {operation['id']}):")
    print_events(found, zero)
    started = next((e for e in found if e["action"] == "instance.start"), None)
    if started is None:
        return
    node = started["message"].split(" on ", 1)[1].split()[0]
    config = env.node_config(node)
    name = next((n for n, i in agent_instances(config).items() if i.get("label") == version["label"]), None)
    if name is None:
        say(f"  (no instance found on {node} to read the start of)")
        return
    marks = instance_start(config, name, version["sha256"], zero)
    say(f"  on {node}, the start of {name} (PUT to answer: {span(marks, 'put received', 'put answered')}):")
    print_segments(marks, START_SEGMENTS)


def span(marks: dict, a: str, b: str) -> str:
    if marks.get(a) is None or marks.get(b) is None:
        return "?"
    return f"{marks[b] - marks[a]:.2f} s"


def run_python(args) -> bool:
    """the second version's build <= 5 s; each added node serving <= 2 s after it is up"""
    cache = Path(tempfile.mkdtemp(prefix="conpaas-bench-package-cache-"))
    say(
        f"python: a cold package cache: CONPAAS_PACKAGE_CACHE={cache} (new, empty), so the first build "
        "downloads every package through the package proxy"
    )
    verdict = False
    try:
        with benchlib.platform("build", keep=args.keep, settings={"CONPAAS_PACKAGE_CACHE": str(cache)}) as env:
            try:
                verdict = python_phase(env, args, cache)
            finally:
                if args.keep or not verdict:
                    say(f"python: the nodes' logs kept in {keep_node_logs(env)}")
            env.failed = not verdict
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        say(f"python: removed the package cache {cache}")
    return verdict


def keep_node_logs(env) -> Path:
    """Copy each node's logs (agent, HAProxy, instances; no node.json: it holds the agent's secret)
    from its own home, which an isolated node has outside CONPAAS_HOME, to <home>/evidence-nodes/."""
    target = env.home / "evidence-nodes"
    for config in env.node_configs():
        home = Path(config["home"])
        for path in home.rglob("*"):
            relative = path.relative_to(home)
            if relative.parts[0] in ("versions", "image") or "home" in relative.parts[:-1]:
                continue
            if path.is_file() and not path.is_symlink() and path.suffix in (".log", ".cfg", ".map", ".state"):
                destination = target / config["name"] / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)
    return target


def python_phase(env, args, cache: Path) -> bool:
    api = env.api
    say(f"python: Django {importlib.metadata.version('Django')} here; the app's requirements: {REQUIREMENTS!r}")
    began = time.monotonic()
    service = api.create_service("buildbench")
    sid, url = service["id"], service["url"]
    benchlib.check_loopback(url)
    say(f"service {sid} at {url}, running in {time.monotonic() - began:.1f} s (its first node booted)")
    figures: dict[str, float] = {}

    # 1. the first build, cold
    v1 = upload(api, sid, "v1")
    operation, seconds = deploy(api, sid, "production", v1, args.build_timeout)
    v1 = version_of(api, sid, v1["id"])
    build = v1.get("build") or {}
    checks = [check(url, "/", "ok v1\n"), check(url, "/static/bench.css", STYLESHEET), check(url, "/deps/", None)]
    found = [e for e in events(api, sid) if e["operation"] == operation["id"]]
    built = next((e for e in found if e["action"] == "build" and e["message"].startswith("built ")), None)
    cached_files, cached_bytes = folder_bytes(cache)
    figures["first build"], figures["first deploy"] = float(build.get("seconds") or 0), seconds
    say(
        f"v1, first build (cold cache): {build.get('seconds')} s, {(build.get('size') or 0) / 2**20:.1f} MB packed; "
        f"the whole deploy (PATCH to its end) {seconds:.1f} s; "
        f"the package cache now holds {cached_files} files, {cached_bytes / 2**20:.1f} MB (what the proxy fetched)"
    )
    if built is None:
        say("  (no 'built v1' event: the first deploy did not build)")
    say(f"  {build.get('summary') or ''}")
    for _, line in checks:
        say(f"  {line}")
    first_deploy_breakdown(env, sid, v1, operation, found)
    if build.get("sha256"):
        path = build_file(env.home, build["sha256"])
        if path is not None:
            files, size = build_contents(path)
            say(f"  the build holds {files} files, {size / 2**20:.1f} MB unpacked")

    # 2. the second version: same requirements, other code
    v2 = upload(api, sid, "v2")
    operation, seconds = deploy(api, sid, args.v2_env, v2, args.build_timeout)
    v2 = version_of(api, sid, v2["id"])
    found = [e for e in events(api, sid) if e["operation"] == operation["id"]]
    requested = found[0]["t"]
    picked = datetime.fromisoformat(operation["started"].replace("Z", "+00:00")).timestamp()
    reused = next((e for e in found if e["action"] == "build" and " reuses the build" in e["message"]), None)
    rebuilt = next((e for e in found if e["action"] == "build" and e["message"].startswith("built ")), None)
    same = (v2.get("build") or {}).get("sha256") == build.get("sha256")
    if reused is not None:
        v2_build = 0.0
        step = reused["t"] - picked
        how = f"reused v1's build (same sha256: {same}); finding it took {step:.2f} s of the deploy"
    elif rebuilt is not None:
        v2_build = float((v2.get("build") or {}).get("seconds") or 0)
        how = f"BUILT again in {v2_build} s (no reuse)"
    else:
        v2_build = float("inf")
        how = "no build event"
    figures["second build"], figures["second deploy"] = v2_build, seconds
    preview = None
    if args.v2_env != "production":
        preview = benchlib.environments(api, sid)[args.v2_env]["preview_key"]
    status, body = benchlib.get_text(url, headers={"X-Conpaas-Env": preview} if preview else None)
    say(
        f"v2 to {args.v2_env}: build {v2_build:.1f} s ({how}); the whole deploy {seconds:.1f} s "
        f"(queued {picked - requested:.2f} s); {args.v2_env} answers {status} {body.strip()!r}"
    )
    say(f"  events of the deploy (from the request, {operation['id']}):")
    print_events(found, requested)
    node1 = next(n["name"] for n in api.get(f"/api/v1/services/{sid}/nodes/").json() if "backend" in n["roles"])
    config1 = env.node_config(node1)
    name = next(
        (n for n, i in agent_instances(config1).items() if i.get("label") == "v2"),
        None,
    )
    if name:
        marks = instance_start(config1, name, v2["sha256"], requested)
        say(f"  on {node1}, the start of {name} (PUT to answer: {span(marks, 'put received', 'put answered')}):")
        print_segments(marks, START_SEGMENTS)
    v2_ok = body == "ok v2\n" and v2_build <= args.build_target

    # 3. scale 1 -> N
    production = "v2" if args.v2_env == "production" else "v1"
    service = api.get(f"/api/v1/services/{sid}/").json()
    proxy = env.proxy_node(service)
    old = {n["name"] for n in service["nodes"]}
    old_backends = sum("backend" in n["roles"] for n in service["nodes"])
    traffic = Traffic(url, f"ok {production}\n")
    watch = Watch(env, proxy, old, production, args.poll)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    traffic.start()
    watch.start()
    scale_began, began = time.time(), time.monotonic()
    try:
        response = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": args.nodes})
        if response.status_code != 202:
            raise RuntimeError(f"scale answered {response.status_code}: {response.text[:300]}")
        operation = api.wait_operation(response.json(), timeout=args.scale_timeout)
        scale_seconds = time.monotonic() - began
        time.sleep(max(0.5, 3 * args.poll))  # the watchers see the last node's end
    finally:
        watch.stop()
        traffic.stop()
    figures["scale"] = scale_seconds
    say(
        f"scale 1 -> {args.nodes}: {operation['state']} in {scale_seconds:.1f} s "
        f"(production {production}; {traffic.requests} requests through the router meanwhile, "
        f"{len(traffic.failures)} failed{': ' + '; '.join(traffic.failures[:3]) if traffic.failures else ''})"
    )
    if operation["state"] != "succeeded":
        say(f"  error: {operation.get('error')}")
    say(f"  the machine: load average {load} at the start; {watch.stalls(scale_began, time.time() - 1)}")
    found = [e for e in events(api, sid) if e["operation"] == operation["id"]]
    say("  events of the scale (from the request):")
    print_events(found, found[0]["t"] if found else scale_began)
    if watch.errors:
        say(f"  watcher errors: {len(watch.errors)} (first: {watch.errors[0]})")

    per_node = node_figures(found, watch, traffic, production)
    say(
        f"  {'node':<20}{'up→started':>12}{'up→answers':>12}{'up→routed':>11}{'up→serving':>12}"
        f"{'up→1st prod':>13}   (seconds; serving = healthy in the router)"
    )
    for row in per_node:
        say(
            f"  {row['node']:<20}{fmt(row, 'started'):>12}{fmt(row, 'answered'):>12}{fmt(row, 'listed'):>11}"
            f"{fmt(row, 'healthy'):>12}{fmt(row, 'first production'):>13}"
        )
    serving = [row["healthy"] - row["up"] for row in per_node if row.get("healthy") and row.get("up")]
    added = args.nodes - old_backends
    nodes_ok = (
        operation["state"] == "succeeded" and len(serving) == added and all(s <= args.node_target for s in serving)
    )

    # where each node's time went
    say("  where each added node's time went (its agent's log, the virtualenv's files, /proc, the router's log):")
    proxy_log = agent_log(proxy)
    versions = {"v1": v1, "v2": v2}
    for row in per_node:
        config = env.node_config(row["node"])
        instance = row.get("instance") or ""
        marks = instance_start(config, instance, versions[production]["sha256"], row.get("up") or scale_began)
        marks["node up"] = row.get("up")
        marks["instance started (event)"] = row.get("started")
        after = marks.get("put answered") or row.get("started") or 0
        others = [(name, t) for name, t in row.get("others", []) if t > after]
        marks["others started"] = max((t for _, t in others), default=None)
        marks["server added"] = first_after(proxy_log, rf"^added server \w+/{re.escape(instance)} ", after)
        marks["router told"] = first_after(proxy_log, r"^PUT /v1/proxy -> 200", after)
        marks["healthy in the router"] = row.get("healthy")
        say(f"  {row['node']} ({instance}): up→serving {fmt(row, 'healthy')} s")
        pause = marks.pop("longest pause", None)
        say(
            f"    its agent's threads during the scale: {watch.agent_cpu(row['node'])}; the build's unpack: "
            f"{watch.stalls(marks.get('build unpack begun'), marks.get('build staged'))}"
            + (f"; longest pause between two files written {pause:.2f} s" if pause is not None else "")
        )
        pushed = "control plane to the router: the server added (PUT /v1/proxy)"
        if others:
            labels = ", ".join(name for name, _ in others)
            before_push = [
                ("put answered", "others started", f"the node's other instances start before it is routed ({labels})"),
                ("others started", "server added", pushed),
            ]
        else:
            before_push = [("put answered", "server added", pushed)]
        print_segments(
            marks,
            [("node up", "put received", "control plane: from the node's up to the PUT of its instance")]
            + START_SEGMENTS
            + before_push
            + [
                ("server added", "router told", "the router's PUT waits for the first check (downinter 100 ms)"),
                ("router told", "healthy in the router", "until the watcher saw it healthy (it polls)"),
            ],
        )

    # every node answers the version, directly and through the router
    verified = verify_nodes(env, api, sid, url, production)
    for line in verified["lines"]:
        say(f"  {line}")

    say(
        "python figures: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in figures.items())
        + "; up→serving per added node: "
        + (", ".join(f"{s:.2f}" for s in serving) or "none")
        + " s"
    )
    say(
        f"python target: v2's build {v2_build:.1f} s <= {args.build_target:.0f} s: {'yes' if v2_ok else 'NO'}; "
        f"each added node serving <= {args.node_target:.0f} s after it is up: {'yes' if nodes_ok else 'NO'}; "
        f"every node answers {production}: {'yes' if verified['ok'] else 'NO'}"
    )
    return v2_ok and nodes_ok and verified["ok"] and all(good for good, _ in checks)


def check(url: str, path: str, expected: str | None) -> tuple[bool, str]:
    status, body, _ = get(url.rstrip("/") + path)
    good = status == 200 and (expected is None or body == expected)
    shown = body.strip().replace("\n", "; ")
    return good, f"GET {path}: {'ok' if good else 'WRONG'} ({status} {shown[:200]!r})"


def fmt(row: dict, key: str) -> str:
    if row.get(key) is None or row.get("up") is None:
        return "?"
    return f"{row[key] - row['up']:.2f}"


def node_figures(found: list[dict], watch: Watch, traffic: Traffic, label: str) -> list[dict]:
    """Per node the scale booted: up (event), its production instance started (event), the node's
    other instances started (events: (label, time)), and what the watchers saw."""
    rows: dict[str, dict] = {}
    for event in found:
        if match := re.match(r"node (\S+) is up at ", event["message"]):
            rows.setdefault(match[1], {"node": match[1]})["up"] = event["t"]
        elif event["action"] == "instance.start" and (match := re.match(r"started (\S+) on (\S+)", event["message"])):
            row = rows.setdefault(match[2], {"node": match[2]})
            if match[1] == label:
                row.setdefault("started", event["t"])
            else:
                row.setdefault("others", []).append((match[1], event["t"]))
    for row in rows.values():
        instances = [
            name for name in {*watch.listed, *watch.addresses, *traffic.first} if name.startswith(f"{row['node']}-")
        ]
        if instances:
            name = instances[0]
            row["instance"] = name
            row["listed"] = watch.listed.get(name)
            row["healthy"] = watch.healthy.get(name)
            row["answered"] = watch.answered.get(name)
            row["first production"] = traffic.first.get(name)
    return sorted(rows.values(), key=lambda r: r.get("up") or 0)


def verify_nodes(env, api, sid: int, url: str, label: str) -> dict:
    """Each backend node's instance asked directly, then who answers through the router."""
    lines, ok = [], True
    expected = f"ok {label}\n"
    nodes = [n for n in api.get(f"/api/v1/services/{sid}/nodes/").json() if "backend" in n["roles"]]
    names = set()
    for node in nodes:
        config = env.node_config(node["name"])
        host = config["agent_bind"].rsplit(":", 1)[0]
        instances = {n: i for n, i in agent_instances(config).items() if i.get("label") == label}
        if not instances:
            lines.append(f"{node['name']}: no instance of {label}")
            ok = False
        for name, instance in instances.items():
            names.add(name)
            status, body, served_by = get(f"http://{host}:{instance['port']}/")
            good = status == 200 and body == expected and served_by == name
            ok = ok and good
            lines.append(
                f"{node['name']}: {name} at {host}:{instance['port']} answers directly {status} {body.strip()!r} "
                f"(X-Served-By {served_by}): {'ok' if good else 'WRONG'}"
            )
    seen: dict[str, int] = {}
    for _ in range(8 * max(1, len(nodes))):
        status, body, served_by = get(url)
        if status == 200 and body == expected:
            seen[served_by] = seen.get(served_by, 0) + 1
        else:
            seen[f"HTTP {status} {body.strip()!r}"] = seen.get(f"HTTP {status} {body.strip()!r}", 0) + 1
    everyone = names <= set(seen) and len(names) == len(nodes)
    ok = ok and everyone and set(seen) <= names
    lines.append(
        f"through the router, {sum(seen.values())} requests answered by: "
        + ", ".join(f"{k} ×{v}" for k, v in sorted(seen.items()))
        + f" ({'every node' if everyone else 'NOT every node'})"
    )
    return {"ok": ok, "lines": lines}


# --------------------------------------------------------------------------------------------
# staging: a 25,000-file tree unpacked as a node does


# The node's unpack checks every member (archives/extraction.py), in Python: within this factor of the
# system's own tools, which check nothing.
STAGING_TARGET = 2.0


def run_staging(args) -> bool:
    """MediaWiki's tree (about 25,000 files) unpacked by a node in <= 2x the time unzip or GNU tar take"""
    from conpaas_agent.instances import MAX_UNPACKED_BYTES, unpack
    from examples.mediawiki.build import MEDIAWIKI, pack

    if not MEDIAWIKI.is_dir():
        say(f"staging: {MEDIAWIKI} is missing: apt-get install --no-install-recommends mediawiki (./run setup does)")
        return False
    # Where a node keeps its versions: this machine's disk, not a tmpfs.
    work = Path(tempfile.mkdtemp(prefix="conpaas-bench-staging-", dir="/var/tmp"))
    try:
        archive = pack(work, ("v1",))["v1"]
        with zipfile.ZipFile(archive) as zf:
            members = len(zf.infolist())
            expanded = sum(info.file_size for info in zf.infolist())
        tree = work / "tree"
        unpack(str(archive), str(tree))  # a tar.gz of the same tree, for GNU tar
        tar_gz = work / "wiki-v1.tar.gz"
        subprocess.run(["tar", "-czf", str(tar_gz), "-C", str(tree), "."], check=True)
        shutil.rmtree(tree)
        say(
            f"staging: MediaWiki {archive.name}: {members:,} members, {expanded / 2**20:.0f} MB expanded; "
            f"zip {archive.stat().st_size / 2**20:.1f} MB, tar.gz {tar_gz.stat().st_size / 2**20:.1f} MB; in {work}"
        )
        runs = {
            "node (zip)": lambda dest: unpack(str(archive), dest, MAX_UNPACKED_BYTES),
            "node (tar.gz)": lambda dest: unpack(str(tar_gz), dest, MAX_UNPACKED_BYTES),
            "GNU tar -xzf": lambda dest: subprocess.run(["tar", "-xzf", str(tar_gz), "-C", dest], check=True),
        }
        if shutil.which("unzip"):
            runs["unzip -q"] = lambda dest: subprocess.run(["unzip", "-q", str(archive), "-d", dest], check=True)
        best: dict[str, float] = {}
        for attempt in range(args.staging_runs):
            for number, (name, run) in enumerate(runs.items()):
                # Each into a new folder, all removed at the end: on this machine's disk (ext4,
                # discard) files written just after many were deleted take several times longer.
                dest = work / f"out-{attempt}-{number}"
                os.makedirs(dest)
                began = time.perf_counter()
                run(str(dest))
                seconds = time.perf_counter() - began
                best[name] = min(best.get(name, seconds), seconds)
                say(f"staging: run {attempt + 1}: {name:<14} {seconds:.2f} s")
        for name, seconds in best.items():
            say(f"staging: best of {args.staging_runs}: {name:<14} {seconds:.2f} s ({members / seconds:,.0f} files/s)")
        verdict = True
        for node, peer in (("node (zip)", "unzip -q"), ("node (tar.gz)", "GNU tar -xzf")):
            if peer in best:
                ratio = best[node] / best[peer]
                verdict = verdict and ratio <= STAGING_TARGET
                say(f"staging: {node} takes {ratio:.2f}x the time of {peer}")
        return verdict
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# phases and the run

PHASES = {"staging": run_staging, "python": run_python}


def target_of(phase: str) -> str:
    return (PHASES[phase].__doc__ or "").strip().splitlines()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--phase", action="append", choices=list(PHASES), help="a phase to run (repeat it for more; default all)"
    )
    parser.add_argument("--staging-runs", type=int, default=3, help="staging: runs of each unpack (the best counts)")
    parser.add_argument("--nodes", type=int, default=4, help="python: backend nodes to scale out to")
    parser.add_argument(
        "--v2-env", default="production", choices=("production", "development"), help="python: where v2 goes"
    )
    parser.add_argument("--poll", type=float, default=0.1, help="python: seconds between looks at the router")
    parser.add_argument("--build-target", type=float, default=5.0, help="python: the second build's limit, s")
    parser.add_argument("--node-target", type=float, default=2.0, help="python: up→serving limit per node, s")
    parser.add_argument("--build-timeout", type=float, default=600.0, help="python: give up on a deploy, s")
    parser.add_argument("--scale-timeout", type=float, default=300.0, help="python: give up on the scale, s")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep each platform's CONPAAS_HOME and node logs")
    args = parser.parse_args()
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    phases = args.phase or list(PHASES)

    say(f"== build: {', '.join(phases)} ==")
    benchlib.print_machine()
    results: dict[str, bool] = {}
    try:
        with benchlib.time_limit(args.time_limit):
            for phase in phases:
                say(f"== phase {phase} (target: {target_of(phase)}) ==")
                try:
                    results[phase] = PHASES[phase](args)
                except benchlib.RunTimeout:
                    results[phase] = False
                    raise
                except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
                    say(f"error: {type(exc).__name__}: {exc}")
                    results[phase] = False
                say(f"phase {phase}: {'passed' if results[phase] else 'FAILED'}")
    except benchlib.RunTimeout as exc:
        say(f"error: {exc}")
    verdict = all(results.get(phase, False) for phase in phases)
    outcome = "; ".join(
        f"{phase} {'passed' if results.get(phase) else 'failed' if phase in results else 'not run'}" for phase in phases
    )
    targets = "; ".join(f"{phase}: {target_of(phase)}" for phase in phases)
    say(f"{'PASS' if verdict else 'FAIL'}: build ({outcome}) (targets: {targets})")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
