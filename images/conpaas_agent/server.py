"""The node agent: an HTTP daemon the control plane drives with signed requests.

``python -m conpaas_agent /path/node.json`` (with ``images/`` on ``sys.path``). State lives in
``<home>/state.json``, so a restarted agent re-adopts running instances and HAProxy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple
from urllib.parse import parse_qs, urlsplit

from conpaas_common import signing
from conpaas_common.wire import (
    INSTANCES_PATH,
    PROXY_METRICS_PATH,
    PROXY_PATH,
    PROXY_RELOAD_PATH,
    RELEASES_PATH,
    STATUS_PATH,
)

from . import instances
from .router.proxy import Proxy, Unhealthy
from .router.runtime_api import HAProxyError
from .router.validation import InvalidRouting, validate_routing

log = logging.getLogger("conpaas_agent")

MAX_BODY = 1024 * 1024
ROLES = {"proxy", "backend"}


class RequestRefused(Exception):
    """The agent answers this request with an error `status` and `message` (its JSON `error`)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def load_config(path: str) -> dict:
    with open(path) as fh:
        config = json.load(fh)
    for field in ("name", "secret", "roles", "agent_bind", "home"):
        if field not in config:
            raise SystemExit(f"{path}: missing field {field!r}")
    if not isinstance(config["roles"], list) or not set(config["roles"]) <= ROLES:
        raise SystemExit(f"{path}: roles must be a list drawn from {sorted(ROLES)}")
    if "proxy" in config["roles"] and "http_bind" not in config:
        raise SystemExit(f"{path}: a proxy node needs http_bind")
    config["home"] = os.path.abspath(config["home"])
    return config


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def instance_host(config: dict) -> str:
    """Where instances listen: the node's address, the one its agent is bound to (loopback when
    the agent listens on every address: the router is then on this node)."""
    host, _ = split_bind(config["agent_bind"])
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


class Agent:
    def __init__(self, config: dict):
        self.config = config
        self.name = config["name"]
        self.roles = list(config["roles"])
        self.home = config["home"]
        self.state_path = os.path.join(self.home, "state.json")
        self._state_lock = threading.Lock()
        self.replay_guard = signing.ReplayGuard()
        state = self._load_state()
        self.instances = (
            instances.Instances(
                self.home,
                state.get("instances"),
                self.save_state,
                host=instance_host(config),
                control_url=config.get("control_url", ""),
            )
            if "backend" in self.roles
            else None
        )
        self.proxy = (
            Proxy(
                self.home,
                config["http_bind"],
                state.get("proxy"),
                self.save_state,
                local_socket=self.instances.local_socket if self.instances else None,
            )
            if "proxy" in self.roles
            else None
        )

    def _load_state(self) -> dict:
        try:
            with open(self.state_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.state_path, exc)
            return {}

    def save_state(self) -> None:
        with self._state_lock:
            state = {
                "name": self.name,
                "instances": self.instances.state() if self.instances else {},
                "proxy": self.proxy.state() if self.proxy else None,
            }
            tmp = f"{self.state_path}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(state, fh, indent=1, sort_keys=True)
            os.replace(tmp, self.state_path)

    def start(self) -> None:
        if self.proxy:
            try:
                self.proxy.start()
            except HAProxyError as exc:  # the next PUT /v1/proxy tries again
                log.error("HAProxy is not running: %s", exc)
        self.save_state()

    # routes
    def need(self, role: str):
        component = self.instances if role == "backend" else self.proxy
        if component is None:
            raise RequestRefused(404, f"node {self.name} has no {role} role")
        return component

    def handle(self, method: str, path: str, query: dict, body: object) -> tuple[int, object]:
        """Answer by ROUTES: an unknown path is a 404; on a known one, a node without the route's
        role a 404, then a method the path does not take a 405."""
        found = [(route, match) for route in ROUTES if (match := route.path.fullmatch(path))]
        if not found:
            raise RequestRefused(404, f"no such resource: {path}")
        if role := found[0][0].role:
            self.need(role)
        for route, match in found:
            if route.method == method:
                return route.handler(self, query, body, *match.groups())
        raise RequestRefused(405, f"{method} is not allowed on {path}")

    def status(self, query: dict, body: object) -> tuple[int, object]:
        return 200, {
            "name": self.name,
            "roles": self.roles,
            "instances": self.instances.all() if self.instances else {},
            "proxy": self.proxy.status() if self.proxy else None,
        }

    def run_release(self, query: dict, body: object) -> tuple[int, object]:
        return 200, self.instances.release(body)

    def put_instance(self, query: dict, body: object, name: str) -> tuple[int, object]:
        instance, _created = self.instances.put(name, body)
        return 200, instance

    def get_instance(self, query: dict, body: object, name: str) -> tuple[int, object]:
        instance = self.instances.get(name)
        instance["health"] = self.instances.health(name, query.get("path", ["/"])[0])
        if (replication := self.instances.replication(name)) is not None:
            instance["replication"] = replication
        return 200, instance

    def delete_instance(self, query: dict, body: object, name: str) -> tuple[int, object]:
        purge = query.get("purge", ["false"])[0]
        if purge not in ("true", "false"):
            raise RequestRefused(400, "purge must be true or false")
        self.instances.delete(name, purge=purge == "true")
        return 204, None

    def take_backup(self, query: dict, body: object, name: str) -> tuple[int, object]:
        return 200, self.instances.take_backup(name)

    def list_backups(self, query: dict, body: object, name: str) -> tuple[int, object]:
        archive_only = query.get("archive_only", ["false"])[0]
        if archive_only not in ("true", "false"):
            raise RequestRefused(400, "archive_only must be true or false")
        return 200, self.instances.backups(name, archive_only=archive_only == "true")

    def delete_backup(self, query: dict, body: object, name: str, backup_id: str) -> tuple[int, object]:
        self.instances.delete_backup(name, backup_id)
        return 204, None

    def instance_logs(self, query: dict, body: object, name: str) -> tuple[int, object]:
        try:
            lines = int(query.get("lines", ["100"])[0])
        except ValueError as exc:
            raise RequestRefused(400, "lines must be a whole number") from exc
        return 200, {"name": name, "files": self.instances.logs(name, lines, query.get("file"))}

    def get_proxy(self, query: dict, body: object) -> tuple[int, object]:
        return 200, self.proxy.status()

    def put_proxy(self, query: dict, body: object) -> tuple[int, object]:
        try:
            routing = validate_routing(body)
        except InvalidRouting as exc:
            raise RequestRefused(400, str(exc)) from exc
        gate = query.get("require_healthy", [None])[0]
        try:
            return 200, self.proxy.apply(routing, require_healthy=gate)
        except Unhealthy as exc:
            raise RequestRefused(409, str(exc)) from exc

    def proxy_metrics(self, query: dict, body: object) -> tuple[int, object]:
        try:
            window = min(3600.0, max(1.0, float(query.get("window", ["60"])[0])))
        except ValueError as exc:
            raise RequestRefused(400, "window must be a number of seconds") from exc
        return 200, self.proxy.metrics(window)

    def reload_proxy(self, query: dict, body: object) -> tuple[int, object]:
        self.proxy.reload()
        return 200, self.proxy.status()


class Route(NamedTuple):
    method: str
    path: re.Pattern  # matched whole; its groups are the handler's last arguments
    role: str | None  # the role a node needs; every route of one path names the same
    handler: Callable  # an Agent method taking the query, the body and the path's groups


INSTANCE = re.escape(INSTANCES_PATH) + "/([^/]+)"
ROUTES = [  # the agent's whole API
    Route(method, re.compile(path), role, handler)
    for method, path, role, handler in (
        ("GET", re.escape(STATUS_PATH), None, Agent.status),
        ("POST", re.escape(RELEASES_PATH), "backend", Agent.run_release),
        ("PUT", INSTANCE, "backend", Agent.put_instance),
        ("GET", INSTANCE, "backend", Agent.get_instance),
        ("DELETE", INSTANCE, "backend", Agent.delete_instance),
        ("GET", INSTANCE + "/logs", "backend", Agent.instance_logs),
        ("POST", INSTANCE + "/backup", "backend", Agent.take_backup),
        ("GET", INSTANCE + "/backups", "backend", Agent.list_backups),
        ("DELETE", INSTANCE + "/backups/([^/]+)", "backend", Agent.delete_backup),
        ("GET", re.escape(PROXY_PATH), "proxy", Agent.get_proxy),
        ("PUT", re.escape(PROXY_PATH), "proxy", Agent.put_proxy),
        ("GET", re.escape(PROXY_METRICS_PATH), "proxy", Agent.proxy_metrics),
        ("POST", re.escape(PROXY_RELOAD_PATH), "proxy", Agent.reload_proxy),
    )
]


class Handler(BaseHTTPRequestHandler):
    server_version = "conpaas-agent/1"
    protocol_version = "HTTP/1.1"
    agent: Agent  # set on the subclass made by serve()

    def _dispatch(self) -> None:
        started = time.monotonic()
        status = 500
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                raise RequestRefused(400, "the request body is too large")
            raw = self.rfile.read(length) if length else b""
            if not signing.verify(
                self.agent.config["secret"],
                self.command,
                self.path,
                self.headers.get(signing.TIMESTAMP_HEADER),
                self.headers.get(signing.SIGNATURE_HEADER),
                raw,
                nonce=self.headers.get(signing.NONCE_HEADER),
            ):
                raise RequestRefused(401, "missing or invalid request signature")
            if not self.agent.replay_guard.first_use(self.headers.get(signing.NONCE_HEADER)):
                raise RequestRefused(401, "missing nonce, or a request already received (replay)")
            body = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    raise RequestRefused(400, f"the body is not valid JSON: {exc}") from exc
            url = urlsplit(self.path)
            status, payload = self.agent.handle(self.command, url.path, parse_qs(url.query), body)
        except RequestRefused as exc:
            status, payload = exc.status, {"error": exc.message}
        except instances.InstanceError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except HAProxyError as exc:
            log.error("%s %s: %s", self.command, self.path, exc)
            status, payload = 422, {"error": str(exc)}
        except Exception as exc:  # one JSON answer, never a traceback on the wire
            log.exception("%s %s failed", self.command, self.path)
            status, payload = 500, {"error": f"internal agent error: {exc.__class__.__name__}"}
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)
        log.info("%s %s -> %s (%.0f ms)", self.command, self.path, status, (time.monotonic() - started) * 1000)

    do_GET = do_PUT = do_POST = do_DELETE = _dispatch

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(config: dict) -> None:
    os.makedirs(config["home"], mode=0o700, exist_ok=True)
    # The local cloud driver reads this pid: it is also the node's process group (boot.sh runs
    # as a session leader and execs the agent).
    with open(os.path.join(config["home"], "agent.pid"), "w") as fh:
        fh.write(f"{os.getpid()}\n")
    logging.basicConfig(
        filename=os.path.join(config["home"], "agent.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    agent = Agent(config)
    agent.start()
    handler = type("BoundHandler", (Handler,), {"agent": agent})
    server = Server(split_bind(config["agent_bind"]), handler)

    def stop(signum, frame):
        # Only the agent stops: HAProxy and the instances keep serving.
        log.info("signal %s: agent stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("agent %s (roles %s) listening on %s", agent.name, ",".join(agent.roles), config["agent_bind"])
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        log.info("agent stopped")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m conpaas_agent /path/node.json")
    serve(load_config(argv[0]))
