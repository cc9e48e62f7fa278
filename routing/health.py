"""Health, kept on rows: the workers ask the routers, pages read what they saved.

`refresh_health(service)` asks each router of the service once (GET /v1/proxy), saves its answer
(or why it gave none) on the proxy node, and saves each environment's verdict, computed by the
one health rule (`routing.table.health_problems`). The deploy's `wait_healthy` saves the answers it
polls anyway, so health is fresh while something deploys at no extra agent call; `refresh_due`
is the timer's pass over running services. No page view calls an agent.
"""

import time
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from conpaas_common.waiting import wait_until
from routing.table import answered_errors, health_problems, proxy_statuses, running_proxies
from services import agent
from services.choices import DATA_RUNTIMES, NodeState, ServiceState
from services.errors import OperationFailed
from services.models import Node, Service
from versions.instances import Release
from versions.models import Environment

# A router that does not answer in this long is reported as not answering; the timer moves on.
ROUTER_TIMEOUT = 5


def save_health(service, statuses: list[tuple], failure: str = "") -> dict[str, list[str] | None]:
    """Save the routers' answers and, from them, each environment's verdict (None: no version).

    `statuses` are (proxy node, answer) pairs; `failure`, why a router gave no answer: then every
    environment with a version is unhealthy for that reason, as the swap would find it."""
    now = timezone.now()
    for proxy, status in statuses:
        Node.objects.filter(pk=proxy.pk).update(router_status=status, router_error="", router_checked=now)
    verdicts = {}
    environments = Environment.objects.filter(service=service).select_related("version")
    for environment in environments.prefetch_related("database_copies__target"):
        version = environment.version
        if version is None:
            problems = None
        else:
            problems = [failure] if failure else health_problems(service, Release.of(environment), statuses)
        verdicts[environment.name] = problems
        # Only if the environment still serves what was just checked (a deploy may have flipped it).
        Environment.objects.filter(pk=environment.pk, version=version, settings_key=environment.settings_key).update(
            health_problems=problems, health_checked=now, health_version=version
        )
    return verdicts


def refresh_health(service) -> dict[str, list[str] | None]:
    """Ask every running router of `service` once and save what they said; returns the verdicts."""
    statuses, failure = [], ""
    for proxy in running_proxies(service):
        try:
            statuses.append((proxy, agent.client_for(proxy, timeout=ROUTER_TIMEOUT).get_proxy()))
        except agent.AgentError as exc:
            Node.objects.filter(pk=proxy.pk).update(router_error=str(exc), router_checked=timezone.now())
            failure = failure or f"the router on {proxy.name} did not answer: {exc}"
    return save_health(service, statuses, failure)


def check_words(service) -> str:
    expected = service.health_check_status
    return f"GET {service.health_check_path}" + (f", expecting {expected}" if expected else "")


class Unhealthy(OperationFailed):
    """A release did not pass its health check: its instances' logs tell why (workflows.deploy)."""


def wait_healthy(service, release, timeout: float | None = None) -> None:
    """Poll the routers until `release` passes its health checks on every one, saving what they
    answered about once a second for the console. It fails at the timeout, or as soon as an
    instance's app has answered with the same error status for CONPAAS_HEALTH_FAIL_AFTER seconds:
    a check that got an answer will not get a better one by waiting."""
    timeout = settings.CONPAAS_HEALTH_TIMEOUT if timeout is None else timeout
    problems, next_save = [], 0.0
    answering: dict[str, tuple[str, float]] = {}  # instance -> (its error answer, seen since)

    def healthy() -> bool:
        nonlocal next_save
        statuses = proxy_statuses(service)
        problems[:] = health_problems(service, release, statuses)
        now = time.monotonic()
        if not problems or now >= next_save:
            save_health(service, statuses)
            next_save = now + 1.0
        errors = answered_errors(release, statuses)
        for name, error in errors.items():
            if answering.get(name, ("", now))[0] != error:
                answering[name] = (error, now)
        for name in set(answering) - set(errors):
            del answering[name]
        for name, (error, since) in sorted(answering.items()):
            if now - since >= settings.CONPAAS_HEALTH_FAIL_AFTER:
                raise Unhealthy(
                    f"{release.label} answers its health check ({check_words(service)}) with {error}, "
                    f"check after check for {now - since:.1f} s (instance {name})"
                )
        return not problems

    if not wait_until(healthy, timeout, interval=0.2):
        raise Unhealthy(
            f"{release.label} did not pass its health check ({check_words(service)}) "
            f"within {timeout} s: " + "; ".join(problems)
        )


def refresh_due(max_age: float) -> int:
    """Refresh every running service whose routers were last asked `max_age` seconds ago or more;
    returns how many. Each service is claimed with a conditional UPDATE of its proxies'
    `router_checked` first, so passes that overlap (two timers, a slow pass) never ask twice."""
    now = timezone.now()
    stale = Q(router_checked__isnull=True) | Q(router_checked__lte=now - timedelta(seconds=max_age))
    proxies = Node.objects.filter(is_proxy=True, state=NodeState.RUNNING, service__state=ServiceState.RUNNING)
    proxies = proxies.exclude(service__runtime__in=DATA_RUNTIMES)  # TCP routers: services/replication.py
    refreshed = 0
    # One query when nothing is due (or nothing runs): the usual case on an idle platform.
    for service_id in set(proxies.filter(stale).values_list("service_id", flat=True)):
        if not proxies.filter(stale, service_id=service_id).update(router_checked=now):
            continue  # another pass took it
        service = Service.objects.filter(pk=service_id).first()
        if service is not None:
            refresh_health(service)
            refreshed += 1
    return refreshed
