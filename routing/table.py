"""The routing table: what every proxy of a service should route, computed from the database."""

from collections import defaultdict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from services import agent
from services.choices import NodeState
from services.errors import OperationFailed
from versions.models import Environment, Instance, InstanceState


def routing_for(service) -> dict:
    instances = (
        Instance.objects.filter(node__service=service, node__state=NodeState.RUNNING, state=InstanceState.RUNNING)
        .select_related("node")
        .order_by("version_id", "settings_key", "node_id")
    )
    backends = defaultdict(list)
    for instance in instances:
        backends[instance.backend].append(
            {
                "name": instance.name,
                "address": instance.node.address,
                "port": instance.port,
                "maxconn": instance.concurrency,  # the router queues what is beyond it
            }
        )
    # A fresh query: the caller's service may carry prefetched (stale) environments.
    environments = list(Environment.objects.filter(service=service))
    routing = {
        "health_path": service.health_check_path,
        "backends": dict(backends),
        "routes": {env.name: env.backend for env in environments if env.backend in backends},
        "preview_keys": {env.preview_key: env.name for env in environments if env.preview_key},
        "drain_timeout": settings.CONPAAS_DRAIN_TIMEOUT,
    }
    # Only when set: a router whose agent predates the field (a cloud VM kept across an upgrade)
    # refuses fields it does not know, and the default is its own rule.
    if service.health_check_status is not None:
        routing["health_status"] = service.health_check_status
    return routing


def running_proxies(service):
    return list(service.proxy_nodes().filter(state=NodeState.RUNNING))


class RouterRefused(OperationFailed):
    """A router refused a health-gated change: the version's servers are not healthy there."""


def push(service, require_healthy=None) -> list[dict]:
    """Send the routing table to every proxy; returns once each has applied it.

    With `require_healthy` (a versions.instances.Release) each router applies it only if that
    release's servers pass their health checks there, checked atomically with the commit."""
    routing = routing_for(service)
    gate = require_healthy.backend if require_healthy is not None else None
    statuses = []
    for proxy in running_proxies(service):
        try:
            statuses.append(agent.client_for(proxy).put_proxy(routing, require_healthy=gate))
        except agent.AgentError as exc:
            if exc.status == 409 and gate:
                raise RouterRefused(f"on {proxy.name}: {exc.detail}") from exc
            raise OperationFailed(f"the router on {proxy.name} did not take the new routes: {exc}") from exc
    return statuses


class RoutesNotRestored(OperationFailed):
    """A flip failed and so did pushing the routes back: the routers may not match the rows.
    The message is the restoring push's; `flip_error` is what made the flip fail."""

    def __init__(self, message: str, flip_error: OperationFailed):
        super().__init__(message)
        self.flip_error = flip_error


def flip_or_restore(service, changes: dict[Environment, dict], release) -> None:
    """Write each environment's new fields, then push, every router flipping only if `release`
    is healthy there. When a router refuses or fails, the rows get back the values they had (the
    environments as given) and the routes are pushed again, so the routers agree with the rows;
    then the flip's error is raised, or RoutesNotRestored when that push fails too."""
    with transaction.atomic():
        now = timezone.now()
        for environment, fields in changes.items():
            Environment.objects.filter(pk=environment.pk).update(**fields, updated=now)
    try:
        push(service, require_healthy=release)
    except OperationFailed as exc:
        with transaction.atomic():
            for environment, fields in changes.items():
                before = {name: environment.serializable_value(name) for name in fields}
                Environment.objects.filter(pk=environment.pk).update(**before)
        try:
            push(service)
        except OperationFailed as again:
            raise RoutesNotRestored(str(again), exc) from again
        raise


def proxy_statuses(service) -> list[tuple[object, dict]]:
    statuses = []
    for proxy in running_proxies(service):
        try:
            statuses.append((proxy, agent.client_for(proxy, timeout=5).get_proxy()))
        except agent.AgentError as exc:
            raise OperationFailed(f"the router on {proxy.name} did not answer: {exc}") from exc
    return statuses


def instance_problems(service, release) -> tuple[list, list[str]]:
    """The running instances of `release` (a versions.instances.Release), and why they do not
    cover every backend node."""
    running = list(
        release.instances()
        .filter(node__service=service, node__state=NodeState.RUNNING, state=InstanceState.RUNNING)
        .select_related("node")
    )
    backend_nodes = service.backend_node_list().filter(state=NodeState.RUNNING).count()
    if len(running) < backend_nodes or not running:
        what = release.label + (f" with {release.environment.name}'s settings" if release.key else "")
        return running, [f"{what} runs on {len(running)} of {backend_nodes} backend node(s)"]
    return running, []


def answered_errors(release, statuses: list) -> dict[str, str]:
    """The instances of `release` whose app answered its last health check with the wrong status
    on some router (HAProxy's L7STS: it serves, and says no), by name: what it answered. The
    routers' own answers name them: no query."""
    errors = {}
    for _proxy, status in statuses:
        for name, server in status.get("backends", {}).get(release.backend, {}).get("servers", {}).items():
            last_check = (server.get("check") or "").removeprefix("* ")  # "* ": the next is under way
            if not server.get("healthy") and last_check.startswith("L7STS") and server.get("check_code"):
                errors[name] = f"HTTP {server['check_code']}"
    return errors


def health_problems(service, release, statuses: list | None = None) -> list[str]:
    """Why `release` is not healthy on every proxy (an empty list: it is)."""
    running, problems = instance_problems(service, release)
    for proxy, status in proxy_statuses(service) if statuses is None else statuses:
        servers = status.get("backends", {}).get(release.backend, {}).get("servers", {})
        for instance in running:
            server = servers.get(instance.name)
            if server is None:
                problems.append(f"the router on {proxy.name} does not know instance {instance.name}")
            elif not server.get("healthy"):  # the agent's verdict (router/runtime_api.py)
                detail = server.get("check") or "no check yet"
                if server.get("check_code"):
                    detail += f", HTTP {server['check_code']}"
                problems.append(f"instance {instance.name} is {server.get('status', 'unknown')} ({detail})")
    return problems
