"""Code versions and instances on a backend node.

A code version is staged once per sha256 under ``<home>/versions/<sha256>/``: ``app/`` (the
unpacked archive) and whatever its runtime builds for it (a python ``venv/``). An instance is one
run of one version by its runtime's recipe (``runtimes/``: gunicorn, nginx + php-fpm, nginx,
Tomcat) on a free port, with its own directory ``<home>/instances/<name>/`` (``instance.log``,
``home/``, the runtime's configs and logs), kept when the instance stops.
A staged version that no instance runs or is starting from any more is removed from the disk
when an instance is deleted, or its start fails (``collect_unused``): no call of its own is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from conpaas_common.archives import ArchiveError, extract_archive, release_command_problem
from conpaas_common.procs import children, cmdline, free_port, pid_alive

from .platform_requests import ACCESS_LOGS, is_platform_line
from .runtimes import RECIPES
from .runtimes.base import InstanceError, Recipe, Run, instance_environ, private_dir, socket_path, tail, why_it_failed

log = logging.getLogger("conpaas_agent.instances")

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 2 * 1024 * 1024 * 1024
STOP_TIMEOUT = 20.0
MAX_LOG_LINES = 1000
MAX_LOG_LINE_CHARS = 4096  # a longer line is cut: one line never fills an answer
LOG_TAIL_BYTES = 1024 * 1024  # read at most this much of the end of a log file
# A release command (migrations) that runs longer is stopped and fails the deploy.
RELEASE_TIMEOUT = 600
COMMON_FIELDS = frozenset(
    {"version", "label", "runtime", "archive_url", "archive_sha256", "env", "build_url", "build_sha256", "routers"}
)
# What a build (builds.py) may unpack to on a node: a virtualenv's packages, a vendor/ tree.
MAX_BUILD_BYTES = 4 * 1024 * 1024 * 1024


# --- logs -------------------------------------------------------------------------------


def read_tail(path: str, lines: int, skip=None) -> list[str]:
    """The last ``lines`` lines of the log file ``path`` (from its last ``LOG_TAIL_BYTES``), but
    those ``skip`` is true for.

    The instance's code runs as the agent's user and could swap its log for a link to another
    file (the node's config, or any file when the agent runs as root): the file is opened without
    following a link, in its directory opened the same way, and read only when it is a regular
    file with no other name (a hard link)."""
    directory, base = os.path.split(path)
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return []
    try:
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return []
    except OSError as exc:  # ELOOP: a symbolic link
        raise InstanceError(f"{base} is not a plain file: not read", 422) from exc
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise InstanceError(f"{base} is not a plain file: not read", 422)
        start = max(0, info.st_size - LOG_TAIL_BYTES)
        fh.seek(start)
        data = fh.read(LOG_TAIL_BYTES)
    found = data.split(b"\n")
    if found and found[-1] == b"":
        found.pop()  # the file ends with a newline
    if start and found:
        found.pop(0)  # a line cut by the start of the read
    decoded = (line.decode(errors="replace")[:MAX_LOG_LINE_CHARS] for line in found)
    return [line for line in decoded if not (skip and skip(line))][-lines:]


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


def unpack(archive: str, dest: str, max_bytes: int = MAX_UNPACKED_BYTES, content_times: bool = False) -> None:
    """Unpack a zip or tar.gz into ``dest`` under the shared archive rules (``content_times``:
    extract_archive's, for a code version's files)."""
    try:
        extract_archive(archive, dest, max_bytes, content_times)
    except ArchiveError as exc:
        raise InstanceError(f"the archive is refused: {exc}") from exc


# --- instances ---------------------------------------------------------------------------


# Spec fields a new instance starts with that never restart a running one: download links (they
# expire and are re-signed), a restore and a port (only a server without data or port takes them),
# the master a replica or a sentinel begins with, and the Galera members a member joins.
START_ONLY_FIELDS = (
    "archive_url",
    "build_url",
    "restore",
    "port",
    "replica_port",
    "replica_of",
    "monitor",
    "peers",
    "bootstrap",
)


def validate_instance(body: object) -> dict:
    """The instance spec, checked: the common fields, then the runtime's own (its recipe's)."""
    if not isinstance(body, dict):
        raise InstanceError("the body must be a JSON object", 400)
    runtime = body.get("runtime", "python")
    recipe = RECIPES.get(runtime) if isinstance(runtime, str) else None
    if recipe is None:
        raise InstanceError(f"runtime {runtime!r} is not supported by this agent ({', '.join(RECIPES)})", 400)
    unknown = set(body) - COMMON_FIELDS - recipe.fields
    if unknown:
        raise InstanceError(f"unknown field(s) for a {runtime} instance: {', '.join(sorted(unknown))}", 400)
    if not recipe.archive:
        # A data service's server: no code version, nothing to stage.
        unknown = set(body) - {"runtime", "env"} - recipe.fields
        if unknown:
            raise InstanceError(f"unknown field(s) for a {runtime} instance: {', '.join(sorted(unknown))}", 400)
        return {
            "version": runtime,
            "label": runtime,
            "runtime": runtime,
            "archive_url": "",
            "archive_sha256": "",
            "env": {},
            **recipe.validate(body),
        }
    for field in ("version", "archive_url", "archive_sha256"):
        if not isinstance(body.get(field), str) or not body[field]:
            raise InstanceError(f"{field} is required (a string)", 400)
    sha = body["archive_sha256"].lower()
    if not SHA256_RE.match(sha):
        raise InstanceError("archive_sha256 must be 64 hex digits", 400)
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and ENV_NAME_RE.match(k) and isinstance(v, str) and "\0" not in v for k, v in env.items()
    ):
        raise InstanceError("env must map variable names to strings", 400)
    label = body.get("label") or body["version"]
    if not isinstance(label, str):
        raise InstanceError("label must be a string", 400)
    return {
        "version": body["version"],
        "label": label,
        "runtime": runtime,
        "archive_url": body["archive_url"],
        "archive_sha256": sha,
        "env": dict(env),
        "routers": validate_routers(body),
        **validate_build(body),
        **recipe.validate(body),
    }


def validate_routers(body: dict) -> list[str]:
    """The addresses of the service's routers (proxy nodes): the instance trusts the X-Forwarded-*
    headers of these alone, and of a router on its own node (runtimes/base.py: trusted_proxies)."""
    routers = body.get("routers") or []
    try:
        if not isinstance(routers, list) or len(routers) > 64:
            raise ValueError
        return sorted({str(ipaddress.ip_address(address)) for address in routers})
    except ValueError:
        raise InstanceError("routers must be a list of at most 64 IP addresses", 400) from None


def validate_build(body: dict) -> dict:
    """The version's build (the control plane made it once: builds.py), when it has one: both
    build_url and build_sha256, or neither."""
    url, sha = body.get("build_url"), body.get("build_sha256")
    if url is None and sha is None:
        return {}
    if not isinstance(url, str) or not url or not isinstance(sha, str) or not SHA256_RE.match(sha.lower()):
        raise InstanceError("build_url and build_sha256 (64 hex digits) go together", 400)
    return {"build_url": url, "build_sha256": sha.lower()}


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def recipe_of(record: dict) -> Recipe:
    return RECIPES[record.get("runtime", "python")]


def pids_of(record: dict) -> list[int]:
    """The instance's processes in the order they started (a record of an older agent: one)."""
    return list(record.get("pids") or [record["pid"]])


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
        self._backup_locks: dict[str, threading.Lock] = {}
        self._starting: dict[str, int] = {}  # sha256 -> PUTs staging or starting an instance of it
        self.processes: dict[str, list[subprocess.Popen]] = {}
        self.records: dict[str, dict] = {}
        for name, record in (state or {}).items():
            if self._adoptable(record):
                self.records[name] = record
                log.info("re-adopted instance %s (pids %s, port %s)", name, pids_of(record), record["port"])
            else:
                log.info("instance %s (pid %s) is gone", name, record.get("pid"))

    def _adoptable(self, record: dict) -> bool:
        if record.get("runtime", "python") not in RECIPES or not isinstance(record.get("pid"), int):
            return False
        # A record of an older agent (python only) has no marker: its gunicorn binds host:port.
        marker = record.get("marker") or f"{self.host}:{record.get('port')}"
        # Guards against recycled pids: each process must still be this instance's.
        return all(pid_alive(pid) and marker in cmdline(pid) for pid in pids_of(record))

    def state(self) -> dict:
        # dict() copies in one step, so a PUT in another thread cannot change it mid-iteration
        return {name: dict(record) for name, record in dict(self.records).items()}

    def _lock_for(self, table: dict, key: str) -> threading.Lock:
        with self._lock:
            return table.setdefault(key, threading.Lock())

    def alive(self, name: str) -> bool:
        """Whether every process of the instance runs."""
        record = self.records.get(name)
        if record is None:
            return False
        processes = self.processes.get(name)
        if processes is not None:
            return all(process.poll() is None for process in processes)
        return all(pid_alive(pid) for pid in pids_of(record))

    def public(self, name: str) -> dict:
        record = self.records[name]
        return {
            "name": name,
            "version": record["version"],
            "label": record["label"],
            "runtime": record.get("runtime", "python"),
            "port": record["port"],
            "pid": record["pid"],
            # Instances started before it was recorded were python's, with its concurrency.
            "concurrency": record.get("concurrency", RECIPES[record.get("runtime", "python")].concurrency),
            "state": "running" if self.alive(name) else "exited",
            "details": record.get("details") or {},
        }

    def all(self) -> dict[str, dict]:
        out = {}
        for name in sorted(dict(self.records)):
            try:
                out[name] = self.public(name)
            except KeyError:  # deleted meanwhile
                pass
        return out

    def log_files(self, name: str) -> list[str]:
        """The instance's log files (its runtime's allow-list), whether or not they exist yet;
        only ``instance.log`` for an instance that never started."""
        if not NAME_RE.match(name):
            raise InstanceError(f"instance name must match {NAME_RE.pattern}", 400)
        directory = os.path.join(self.instances_dir, name)
        record = self.records.get(name)
        if record is None and not os.path.isdir(directory):
            raise InstanceError(f"no instance named {name}", 404)
        names = recipe_of(record).logs if record else ("instance.log",)
        return [os.path.join(directory, log_name) for log_name in names]

    def logs(self, name: str, lines: int, files: list[str] | None = None) -> dict[str, list[str]]:
        """The last ``lines`` lines of each of the instance's log files (its allow-list, or the
        ``files`` of it named by base name), by base name; a file not written yet has none.
        Anything not on the allow-list is refused (400): no other path is ever read."""
        if not 1 <= lines <= MAX_LOG_LINES:
            raise InstanceError(f"lines must be a whole number from 1 to {MAX_LOG_LINES}", 400)
        allowed = {os.path.basename(path): path for path in self.log_files(name)}
        for wanted in files or ():
            if wanted not in allowed:
                raise InstanceError(f"{wanted!r} is not a log file of {name}: one of {', '.join(allowed)}", 400)
        return {
            base: read_tail(path, lines, is_platform_line if base in ACCESS_LOGS else None)
            for base, path in allowed.items()
            if not files or base in files
        }

    # staging
    def stage(self, spec: dict, logfile: str, recipe: Recipe) -> tuple[str, dict]:
        """Stage a version once per sha256 (its archive, and its build when it has one), then let
        its runtime set it up once; returns (app directory, what the runtime's build() made)."""
        sha = spec["archive_sha256"]
        with self._lock_for(self._version_locks, sha):
            version_dir = os.path.join(self.versions_dir, sha)
            # A code version's files are served: their times follow their content (archives/extraction.py).
            # A build's keep the archive's, which its compiled .pyc files record.
            unpacked = self._fetch(version_dir, "app", spec["archive_url"], sha, MAX_UNPACKED_BYTES, content_times=True)
            built = None
            if spec.get("build_sha256"):
                build_sha = spec["build_sha256"]
                name = f"build-{build_sha[:16]}"
                built = self._fetch(version_dir, name, spec["build_url"], build_sha, MAX_BUILD_BYTES)
            return unpacked, recipe.build(version_dir, unpacked, logfile, self.nice, built)

    def _fetch(
        self, version_dir: str, name: str, url: str, sha: str, max_bytes: int, content_times: bool = False
    ) -> str:
        """``version_dir/name``: the archive at ``url`` (a path of the control plane), checked
        against ``sha`` and unpacked, unless it is there already."""
        target = os.path.join(version_dir, name)
        if os.path.isdir(target):
            return target
        os.makedirs(version_dir, mode=0o700, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="stage-", dir=version_dir)
        try:
            archive = os.path.join(tmp, "archive")
            download(urllib.parse.urljoin(self.control_url, url), archive, sha)
            unpack(archive, os.path.join(tmp, "tree"), max_bytes, content_times)
            os.replace(os.path.join(tmp, "tree"), target)
            log.info("staged %s of version %s", name, os.path.basename(version_dir)[:12])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    @contextlib.contextmanager
    def _starting_from(self, sha: str):
        """Marks a version as one an instance is starting from, so it is never collected meanwhile;
        a start that fails leaves nothing staged that no instance uses."""
        with self._lock:
            self._starting[sha] = self._starting.get(sha, 0) + 1
        try:
            yield
        except BaseException:
            self._stop_starting(sha)
            self.collect_unused([sha])
            raise
        self._stop_starting(sha)

    def _stop_starting(self, sha: str) -> None:
        with self._lock:
            self._starting[sha] -= 1
            if not self._starting[sha]:
                del self._starting[sha]

    def collect_unused(self, shas: list[str] | None = None) -> list[str]:
        """Remove each staged version (unpacked code and virtualenv) that no instance runs or is
        starting from, among ``shas`` (default: all); returns the removed ones. An instance whose
        process exited still holds its version: it may be started again.

        Runs when an instance is deleted, not after each start: after a restart of the node the
        control plane starts its versions again one by one, and each would take the next's."""
        with self._lock:
            in_use = self._in_use()
        candidates = [
            sha
            for sha in (os.listdir(self.versions_dir) if shas is None else shas)
            if SHA256_RE.match(sha) and sha not in in_use and os.path.isdir(os.path.join(self.versions_dir, sha))
        ]
        removed = []
        for sha in sorted(candidates):
            # Under the version's lock nobody stages it; a PUT that begins meanwhile counts itself
            # as starting first, so it is either seen below or stages the version again afterwards.
            with self._lock_for(self._version_locks, sha):
                with self._lock:
                    if sha in self._in_use():
                        continue
                shutil.rmtree(os.path.join(self.versions_dir, sha), ignore_errors=True)
            removed.append(sha)
            log.info("removed version %s: no instance uses it", sha[:12])
        return removed

    def _in_use(self) -> set[str]:
        """Called holding ``self._lock``."""
        running = {record.get("archive_sha256") for record in list(self.records.values())}
        return running | set(self._starting)

    # release commands
    def release(self, body: object) -> dict:
        """Run a version's release command once (database migrations, say), in the version's
        staged code with the instance environment the spec gives (settings, links), before the
        control plane lets the version into an environment. Answers its exit code and the end of
        its output; the command runs without a shell, as this agent's (the node's) user."""
        if not isinstance(body, dict):
            raise InstanceError("the body must be a JSON object", 400)
        command = body.get("command")
        if problem := release_command_problem(command):
            raise InstanceError(f"command {problem}", 400)
        spec = validate_instance({k: v for k, v in body.items() if k != "command"})
        recipe = RECIPES[spec["runtime"]]
        sha = spec["archive_sha256"]
        with self._starting_from(sha):
            release_dir = private_dir(os.path.join(self.versions_dir, sha, "release"))
            logfile = os.path.join(release_dir, "release.log")
            app_dir, build = self.stage(spec, logfile, recipe)
            extra = {"CONPAAS_VERSION": spec["label"], **spec["env"]}
            env = instance_environ(private_dir(os.path.join(release_dir, "home")), extra, build.get("venv"))
            argv = shlex.split(command)
            if argv[0] in ("python", "python3") and build.get("python"):
                argv[0] = build["python"]  # the interpreter the version's instances run on
            began = time.monotonic()
            with open(logfile, "wb") as out:
                try:
                    done = subprocess.run(
                        ["nice", "-n", str(self.nice), *argv],
                        cwd=app_dir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        timeout=RELEASE_TIMEOUT,
                        close_fds=True,
                    )
                    code = done.returncode
                except subprocess.TimeoutExpired:
                    out.write(f"stopped after {RELEASE_TIMEOUT} s\n".encode())
                    code = -1
            seconds = round(time.monotonic() - began, 2)
            log.info("release command of version %s ended with %s in %s s", spec["version"], code, seconds)
            return {"exit_code": code, "output": tail(logfile, 100), "seconds": seconds}

    # lifecycle
    def put(self, name: str, body: object) -> tuple[dict, bool]:
        """Stage and run one instance; returns (instance, created)."""
        if not NAME_RE.match(name):
            raise InstanceError(f"instance name must match {NAME_RE.pattern}", 400)
        spec = validate_instance(body)
        with self._starting_from(spec["archive_sha256"]):
            return self._put(name, spec)

    def _put(self, name: str, spec: dict) -> tuple[dict, bool]:
        recipe = RECIPES[spec["runtime"]]
        # What only a start takes (START_ONLY_FIELDS) is not part of what runs: a PUT that differs
        # only there leaves the running instance alone.
        identity = {k: v for k, v in spec.items() if k not in START_ONLY_FIELDS}
        spec_hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        with self._lock_for(self._name_locks, name):
            record = self.records.get(name)
            if record and record.get("spec_hash") == spec_hash and self.alive(name):
                return self.public(name), False
            if record and self._reconfigured(name, record, recipe, spec, spec_hash):
                return self.public(name), False
            if record:
                self._stop(name)
            instance_dir = os.path.join(self.instances_dir, name)
            os.makedirs(instance_dir, mode=0o700, exist_ok=True)
            logfile = os.path.join(instance_dir, "instance.log")
            if recipe.archive:
                app_dir, build = self.stage(spec, logfile, recipe)
            else:
                app_dir, build = instance_dir, {}
            port = self._port_for(spec)
            # The control plane's env (CONPAAS_ENV, CONPAAS_SERVICE, settings, links) may not
            # move the instance off its PORT.
            home = private_dir(os.path.join(instance_dir, "home"))
            extra = {"CONPAAS_VERSION": spec["label"], **spec["env"], "PORT": str(port)}
            env = instance_environ(home, extra, build.get("venv"))
            socket = socket_path(instance_dir) if recipe.unix_socket else ""
            run = Run(name, spec, instance_dir, app_dir, self.host, port, env, self.nice, logfile, build, socket)
            with open(logfile, "ab") as out:
                out.write(f"--- starting {name} (version {spec['version']}, {recipe.name}) on port {port}\n".encode())
                run.log_offset = out.tell()
            try:
                recipe.start(run)
                self._wait_ready(recipe, run)
            except BaseException:
                self._terminate_all(recipe, [p.pid for p in run.processes], run.processes)
                raise
            pids = [process.pid for process in run.processes]
            self.processes[name] = run.processes
            self.records[name] = {
                **spec,
                "port": port,
                "pid": pids[-1],  # the process that listens on the port
                "pids": pids,
                "marker": recipe.marker(run),
                "details": recipe.details(run),
                "socket": run.socket,
                "concurrency": recipe.concurrency,
                "spec_hash": spec_hash,
                "started": time.time(),
            }
            self._save()
            log.info("started instance %s version %s on port %s (pids %s)", name, spec["version"], port, pids)
            return self.public(name), True

    def _reconfigured(self, name: str, record: dict, recipe: Recipe, spec: dict, spec_hash: str) -> bool:
        """A running instance whose recipe takes the new spec in place (a router's members)."""
        reconfigure = getattr(recipe, "reconfigure", None)
        if reconfigure is None or record.get("runtime") != spec["runtime"] or not self.alive(name):
            return False
        details = reconfigure(os.path.join(self.instances_dir, name), self.host, record, spec)
        if details is None:
            return False
        self.records[name] = {**record, **spec, "port": record["port"], "details": details, "spec_hash": spec_hash}
        self._save()
        log.info("reconfigured instance %s in place", name)
        return True

    def replication(self, name: str) -> dict | None:
        """A data server's part in its service's replication (its recipe's answer), if it has one."""
        record = self.records.get(name)
        if record is None:
            raise InstanceError(f"no instance named {name}", 404)
        recipe = recipe_of(record)
        if not hasattr(recipe, "replication"):
            return None
        if not self.alive(name):
            stopped = recipe.stopped_state(os.path.join(self.instances_dir, name), record)
            return {"role": None, "detail": "the server has exited", **stopped}
        return recipe.replication(os.path.join(self.instances_dir, name), self.host, record["port"], record)

    @staticmethod
    def _wait_ready(recipe: Recipe, run: Run) -> None:
        """Until the recipe says it serves, one of its processes exits, or its start timeout."""
        deadline = time.monotonic() + recipe.start_timeout
        while not recipe.ready(run):
            exited = next((p for p in run.processes if p.poll() is not None), None)
            if exited is not None:
                code = exited.returncode
                raise InstanceError(f"instance {run.name} exited at start (code {code}): {why_it_failed(run.logfile)}")
            if time.monotonic() > deadline:
                timeout = recipe.start_timeout
                raise InstanceError(
                    f"instance {run.name} did not answer within {timeout:.0f} s: {why_it_failed(run.logfile)}"
                )
            time.sleep(0.05)

    def _port_for(self, spec: dict) -> int:
        """The port the spec asks for (a data server rebuilt where its clients look), or a free one."""
        wanted = spec.get("port")
        if wanted is None:
            return free_port(self.host)
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, wanted))
            return wanted
        raise InstanceError(f"port {wanted} is in use on this node", 409)

    def local_socket(self, address: str, port: int) -> str | None:
        """The unix socket of the instance of this node that listens on ``address:port``, if it
        has one and it is there: what a router on this node connects to instead."""
        if address != self.host:
            return None
        for name, record in dict(self.records).items():
            socket = record.get("socket")
            if record.get("port") == port and socket and self.alive(name) and os.path.exists(socket):
                return socket
        return None

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
        return recipe_of(record).healthy(self.host, record["port"], path)

    # backups of a data server (runtimes/postgresql.py: an instance with a backup location)
    def _backing_up(self, name: str):
        record = self.records.get(name)
        if record is None:
            raise InstanceError(f"no instance named {name}", 404)
        recipe = recipe_of(record)
        if not hasattr(recipe, "take_backup"):
            raise InstanceError(f"a {recipe.name} instance takes no backups through its agent", 409)
        return recipe, os.path.join(self.instances_dir, name), record

    def take_backup(self, name: str) -> dict:
        recipe, directory, record = self._backing_up(name)
        # One backup of an instance at a time: barman would take both, twice the work.
        with self._lock_for(self._backup_locks, name):
            began = time.monotonic()
            backup = recipe.take_backup(name, directory, record)
        log.info("took backup %s of instance %s in %.1f s", backup["backup_id"], name, time.monotonic() - began)
        return backup

    def backups(self, name: str, archive_only: bool = False) -> dict:
        """The instance's backups and how far its WAL is archived; `archive_only`: the archive's
        state alone (a query of the server, milliseconds), without listing the store (a
        barman-cloud process, seconds), for the workers' frequent reads."""
        recipe, directory, record = self._backing_up(name)
        if archive_only:
            archived_until, failing = recipe.archiving_state(directory, record)
            return {"archived_until": archived_until, "archive_failing": failing}
        return recipe.list_backups(name, directory, record)

    def delete_backup(self, name: str, backup_id: str) -> None:
        recipe, directory, record = self._backing_up(name)
        with self._lock_for(self._backup_locks, name):
            recipe.delete_backup(name, directory, record, backup_id)
        log.info("deleted backup %s of instance %s", backup_id, name)

    def delete(self, name: str, purge: bool = False) -> None:
        """Stop the instance and forget it; its directory (a data server's data) is kept for
        the next PUT of that name, or removed with ``purge`` (a scratch server, or a restore in
        place, which only an instance without data takes)."""
        if not NAME_RE.match(name):
            raise InstanceError(f"instance name must match {NAME_RE.pattern}", 400)
        with self._lock_for(self._name_locks, name):
            if name in self.records:
                self._stop(name)
                self._save()
            if purge:
                shutil.rmtree(os.path.join(self.instances_dir, name), ignore_errors=True)
                log.info("removed the directory of instance %s", name)
        self.collect_unused()

    def _stop(self, name: str) -> None:
        record = self.records.pop(name)
        recipe = recipe_of(record)
        self._terminate_all(recipe, pids_of(record), self.processes.pop(name, None), record)
        # What its processes started and left (Patroni's PostgreSQL runs in a session of its own).
        for pid in recipe.lingering_pids(os.path.join(self.instances_dir, name), record):
            self._terminate(pid, None, signal.SIGTERM, False)
        log.info("stopped instance %s (pids %s)", name, pids_of(record))

    @classmethod
    def _terminate_all(
        cls, recipe: Recipe, pids: list[int], processes: list[subprocess.Popen] | None, record: dict | None = None
    ) -> None:
        """Stop the processes in the reverse order of their start (nginx before its php-fpm)."""
        by_pid = {process.pid: process for process in processes or []}
        signals = recipe.stop_signals_for(record or {})
        for index in reversed(range(len(pids))):
            sig = signals[index] if index < len(signals) else signal.SIGTERM
            cls._terminate(pids[index], by_pid.get(pids[index]), sig, recipe.resignal_children)

    @staticmethod
    def _terminate(pid: int, process: subprocess.Popen | None, sig: int, resignal_children: bool) -> None:
        """`sig`, then SIGKILL to it and its children after STOP_TIMEOUT seconds."""

        def gone() -> bool:
            return process.poll() is not None if process is not None else not pid_alive(pid)

        if gone():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        resignal = time.monotonic() + 1
        while not gone():
            if resignal_children and time.monotonic() > resignal:
                for child in children(pid):
                    try:
                        os.kill(child, sig)
                    except ProcessLookupError:
                        pass
                resignal = time.monotonic() + 1
            if time.monotonic() > deadline:
                # Workers outlive a killed master (nginx's, php-fpm's do): they go with it.
                for doomed in [pid, *descendants(pid)]:
                    try:
                        os.kill(doomed, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                if process is not None:
                    process.wait(5)
                return
            time.sleep(0.05)
