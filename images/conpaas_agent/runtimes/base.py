"""What every runtime recipe shares: the error type, an instance's environment, the run context,
starting a process, rendering a config template, and the readiness probe.

Standard library only, like the whole agent.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conpaas_common.excerpts import excerpt

from ..platform_requests import PROBE, START_PROBE

# Per-instance configuration files are rendered from these (nginx, php-fpm, Tomcat).
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# An instance's environment is an allow-list (instance_environ): nothing of the agent's own,
# which on the local cloud is the control plane's (`manage.py up` and whatever it was given).
INSTANCE_PATH = "/usr/local/bin:/usr/bin:/bin"
INSTANCE_LOCALE = "C.UTF-8"
# The unix socket an instance also listens on when its runtime can (Recipe.unix_socket), in its
# own directory; a longer path than a socket address holds (108 bytes with its NUL) goes without.
SOCKET_NAME = "http.sock"
MAX_SOCKET_PATH = 107
MAX_SERVER_SOCKET_PATH = 100
_TOKEN_RE = re.compile(r"\{\{([a-z_]+)\}\}")
# Characters no config language we write can take inside a quoted value without escaping
# (nginx expands `$` even in quotes; `;`, braces, quotes, `&`, `<` end or break the value).
_UNQUOTABLE_RE = re.compile(r"[\"'\\$;{}&<>\x00-\x1f]")


class InstanceError(Exception):
    """The work failed; ``status`` is the HTTP status the agent answers (400, 404, 422)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


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


def socket_path(instance_dir: str) -> str:
    """The unix socket of an instance whose runtime listens on one; "" when its path is too long
    for a socket address or could not sit in a config."""
    path = os.path.join(instance_dir, SOCKET_NAME)
    return path if len(path.encode()) <= MAX_SOCKET_PATH and not _UNQUOTABLE_RE.search(path) else ""


def server_socket(directory: str, name: str) -> str:
    """A unix socket a server of the instance listens on (a runtime API, a database's, weed's):
    `name` in its directory, or, when that path is too long for a socket address, a file of
    the temporary directory named after the directory."""
    path = os.path.join(directory, name)
    if len(path.encode()) <= MAX_SERVER_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.path.abspath(directory).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"conpaas-{digest}-{name}")


def private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _end_of(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            return fh.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def tail(path: str, lines: int = 40) -> str:
    """The log's last lines as they are (a release command's output)."""
    return "\n".join(_end_of(path)[-lines:])


def why_it_failed(path: str, lines: int = 40) -> str:
    """The log's last lines that say why its process failed, repeats and stack frames cut
    (conpaas_common.excerpts): the app's own error, not only its supervisor's traceback after it."""
    return "\n".join(excerpt(_end_of(path), lines))


def answers_http(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/", headers={"User-Agent": START_PROBE})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def http_health(url: str, path: str) -> dict:
    try:
        request = urllib.request.Request(url, headers={"User-Agent": PROBE})
        with urllib.request.urlopen(request, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return {"ok": False, "status": None, "detail": f"no answer: {exc}"}
    return {"ok": status < 500, "status": status, "detail": f"GET {path} answered {status}"}


def int_field(body: dict, name: str, low: int, high: int) -> int:
    """A required whole number of the spec: the control plane sends it, the agent never guesses."""
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InstanceError(f"{name} is required: a whole number from {low} to {high}", 400)
    return value


def render(template: str, values: dict[str, object], blocks: dict[str, str] | None = None) -> str:
    """``images/templates/<template>`` with each ``{{name}}`` replaced by ``values[name]``, or by
    ``blocks[name]``: config text the agent built itself from templates and checked names.

    Values are paths the agent made and numbers: one that a config file could not hold inside
    quotes is refused rather than escaped, so nothing an archive names can bend a config."""
    text = (TEMPLATES / template).read_text()
    for name, value in values.items():
        if _UNQUOTABLE_RE.search(str(value)):
            raise InstanceError(f"{name} {str(value)!r} holds a character {template} cannot hold")
    every = {**{k: str(v) for k, v in values.items()}, **(blocks or {})}

    def value(match: re.Match) -> str:
        if match.group(1) not in every:
            raise KeyError(f"{template} needs {match.group(1)}")
        return every[match.group(1)]

    return _TOKEN_RE.sub(value, text)


def as_root() -> bool:
    """The agent runs as root only when the platform does with isolation off (README, Isolation);
    web servers then need to be told to keep their workers as root too, not nobody/www-data,
    which could not read the instance's 0700 directory."""
    return os.geteuid() == 0


def write_config(path: str, text: str) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    return path


@dataclass
class Run:
    """One start of one instance: what the manager prepared, and the processes the recipe spawned."""

    name: str
    spec: dict
    dir: str  # instances/<name>/, kept across restarts and redeploys of the same version
    app: str  # the staged, unpacked archive (shared by the version's instances on this node)
    host: str
    port: int
    env: dict[str, str]
    nice: int
    logfile: str
    build: dict = field(default_factory=dict)  # what the recipe's build() made for this version
    socket: str = ""  # the unix socket to listen on too, "" for none (Recipe.unix_socket)
    processes: list[subprocess.Popen] = field(default_factory=list)
    log_offset: int = 0  # where this start's lines begin in the instance log

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def trusted_proxies(self) -> list[str]:
        """The addresses whose X-Forwarded-For, -Proto and -Host the instance believes: its
        service's routers (the spec's ``routers``) and a router on this node, which connects from
        the node's own address (or through the unix socket, which each web server trusts apart).
        The routers replace what a client sent (router/config.py: FORWARDED_HEADERS). What else
        may connect (services/clouds/network.py: a service linking this one) is not believed;
        on the node itself runs only this service's own code."""
        return sorted({self.host, *self.spec.get("routers", ())})

    def log_since_start(self) -> str:
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(self.log_offset)
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def spawn(self, argv: list[str], cwd: str | None = None) -> subprocess.Popen:
        """Start one process of the instance, below the agent's CPU priority, its output to the
        instance log. It stays in the agent's process group: destroying the node kills it."""
        with open(self.logfile, "ab") as out:
            process = subprocess.Popen(
                ["nice", "-n", str(self.nice), *argv],
                cwd=cwd or self.dir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                close_fds=True,
            )
        self.processes.append(process)
        return process


class Recipe:
    """How one runtime runs an instance. A new runtime is a subclass, its templates, its Debian
    packages (``images/recipes/<name>.txt``) and one line in ``RECIPES``.

    The manager (``instances.Instances``) stages the archive, then calls ``build`` once per
    version, ``start`` per instance, and polls ``ready``; it records the pids and stops them in
    the reverse order of their start, each with its entry of ``stop_signals``."""

    name = ""
    # Whether it runs a code version (an archive); a data service's server runs none.
    archive = True
    # Fields of the instance spec this runtime takes besides the common ones (validate()).
    fields: frozenset[str] = frozenset()
    start_timeout = 30.0
    # One per process start() spawns, in that order: the signal that stops it gracefully.
    stop_signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)
    # Send the stop signal to the processes' children too, every second while they linger.
    resignal_children = False
    # How many requests an instance serves at once: the agent reports it with the instance and
    # the router makes it the server's connection limit (maxconn), so excess requests wait in
    # HAProxy's queue, not in the instance's listen backlog where health checks would wait too.
    concurrency = 1
    # Whether the instance also listens on a unix socket in its directory (``Run.socket``, set by the manager). A
    # router on the same node connects there instead of to the TCP port: no handshake, no
    # firewall or connection tracking, no TIME_WAIT per request (bench/router_overhead.py). The
    # directory is the node user's alone (0700), so the node's firewall still stands for the rest.
    unix_socket = False
    # The files the runtime writes in the instance directory: the allow-list of readable logs.
    logs: tuple[str, ...] = ("instance.log",)

    def validate(self, body: dict) -> dict:
        """The runtime's own fields of the spec, checked, with defaults (InstanceError 400)."""
        return {}

    def stop_signals_for(self, record: dict) -> tuple[signal.Signals, ...]:
        """The stop signals of an instance's processes (``stop_signals``, unless its spec says
        it runs other processes)."""
        return self.stop_signals

    def lingering_pids(self, directory: str, record: dict) -> list[int]:
        """Processes of the instance that its own left running apart from them when stopped."""
        return []

    def stopped_state(self, directory: str, record: dict) -> dict:
        """What a data server that is not running says of its data (a Galera member's position)."""
        return {}

    def build(self, version_dir: str, app: str, logfile: str, nice: int, built: str | None = None) -> dict:
        """Once per version on this node, under the version's lock: set the version up with
        `built`, the unpacked result of its build (builds.py) when it has one. Nothing here
        reaches the network: a node installs only what the control plane built."""
        return {}

    def start(self, run: Run) -> None:
        """Write the instance's configs and spawn its processes with ``run.spawn``."""
        raise NotImplementedError

    def ready(self, run: Run) -> bool:
        """Whether the instance serves: it answers an HTTP request (any status)."""
        return answers_http(run.host, run.port)

    def healthy(self, host: str, port: int, path: str) -> dict:
        """The health check: an HTTP GET of ``path``; any status below 500 passes."""
        return http_health(f"http://{host}:{port}{path}", path)

    def details(self, run: Run) -> dict:
        """What the agent reports of the instance besides its port (``details``): addresses the
        control plane needs of a server with more than one (a storage node's master)."""
        return {}

    def marker(self, run: Run) -> str:
        """A string in the command line of each of its processes: a restarted agent adopts a pid
        only when it still runs this instance (pids are recycled)."""
        return run.dir + os.sep


def installed(path: str, what: str, runtime: str) -> str:
    if not os.path.exists(path):
        raise InstanceError(
            f"{what} is not installed on this node ({path}): install the packages of images/recipes/{runtime}.txt"
        )
    return path
