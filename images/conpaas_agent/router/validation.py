"""The desired routing of ``PUT /v1/proxy``: checked and normalised before anything changes."""

from __future__ import annotations

import re

from conpaas_common.wire import health_path_problem, health_status_problem

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # version keys, server names
ENV_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # environment names
KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # preview keys (same as the cookie filter)
HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
MAX_MAXCONN = 10_000


class InvalidRouting(ValueError):
    """The desired routing body is malformed (the agent answers 400)."""


def validate_routing(body: object) -> dict:
    """Check a ``PUT /v1/proxy`` body and return it normalised."""
    if not isinstance(body, dict):
        raise InvalidRouting("the body must be a JSON object")
    unknown = set(body) - {"health_path", "health_status", "backends", "routes", "preview_keys", "drain_timeout"}
    if unknown:
        raise InvalidRouting(f"unknown field(s): {', '.join(sorted(unknown))}")
    health_path = body.get("health_path", "/")
    if problem := health_path_problem(health_path):
        raise InvalidRouting(f"health_path {problem}")
    health_status = body.get("health_status")
    if problem := health_status_problem(health_status):
        raise InvalidRouting(f"health_status {problem}")
    drain_timeout = body.get("drain_timeout", 30)
    if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)) or not 0 <= drain_timeout <= 3600:
        raise InvalidRouting("drain_timeout must be a number of seconds between 0 and 3600")
    backends = body.get("backends", {})
    if not isinstance(backends, dict):
        raise InvalidRouting("backends must be an object")
    clean_backends: dict[str, list[dict]] = {}
    for key, servers in backends.items():
        if not NAME_RE.match(key):
            raise InvalidRouting(f"backend key {key!r} must match {NAME_RE.pattern}")
        if not isinstance(servers, list):
            raise InvalidRouting(f"backend {key} must be a list of servers")
        seen = set()
        clean_backends[key] = []
        for server in servers:
            if not isinstance(server, dict):
                raise InvalidRouting(f"backend {key} has a server that is not an object")
            name, address, port = server.get("name"), server.get("address"), server.get("port")
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise InvalidRouting(f"backend {key}: server name {name!r} must match {NAME_RE.pattern}")
            if name in seen:
                raise InvalidRouting(f"backend {key}: server {name} is listed twice")
            seen.add(name)
            if not isinstance(address, str) or not HOST_RE.match(address):
                raise InvalidRouting(f"backend {key}: server {name} has an invalid address")
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidRouting(f"backend {key}: server {name} has an invalid port")
            # The instance's concurrency: the router queues what is beyond it. None: no limit.
            maxconn = server.get("maxconn")
            if maxconn is not None and (
                isinstance(maxconn, bool) or not isinstance(maxconn, int) or not 0 < maxconn <= MAX_MAXCONN
            ):
                raise InvalidRouting(
                    f"backend {key}: server {name} maxconn must be a whole number from 1 to {MAX_MAXCONN}"
                )
            clean_backends[key].append({"name": name, "address": address, "port": port, "maxconn": maxconn})
    routes = body.get("routes", {})
    if not isinstance(routes, dict):
        raise InvalidRouting("routes must be an object")
    for env, key in routes.items():
        if not ENV_RE.match(env):
            raise InvalidRouting(f"environment name {env!r} must match {ENV_RE.pattern}")
        if key not in clean_backends:
            raise InvalidRouting(f"route {env} points at backend {key!r}, which is not in backends")
    preview_keys = body.get("preview_keys", {})
    if not isinstance(preview_keys, dict):
        raise InvalidRouting("preview_keys must be an object")
    for key, env in preview_keys.items():
        if not KEY_RE.match(key) or key.lower() == "production":
            raise InvalidRouting(f"a preview key must match {KEY_RE.pattern} and not be 'production'")
        if not isinstance(env, str) or not ENV_RE.match(env):
            raise InvalidRouting(f"preview key target {env!r} must be an environment name")
    return {
        "health_path": health_path,
        "health_status": health_status,
        "backends": clean_backends,
        "routes": dict(routes),
        "preview_keys": dict(preview_keys),
        "drain_timeout": drain_timeout,
    }


EMPTY_ROUTING = {
    "health_path": "/",
    "health_status": None,
    "backends": {},
    "routes": {},
    "preview_keys": {},
    "drain_timeout": 30,
}
