"""Metrics per environment: live from the routers' request logs, and kept as a bounded history.

`service_metrics` asks every router of a service now. The task workers call `sample_due` every
CONPAAS_METRICS_INTERVAL seconds: it saves what the routers say about that last interval as one
raw MetricPoint per environment; `roll_up` turns raw points older than RAW_KEEP into minute
averages and drops minute averages older than MINUTE_KEEP, so a service's history holds at most
`max_points()` rows per environment however long it runs. `series` reads that history; no page
asks a router for it.
"""

import logging
import math
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conpaas_common.wire import KEEP_SECONDS
from routing.health import ROUTER_TIMEOUT
from routing.models import MetricPoint, Resolution
from routing.table import running_proxies
from services import agent
from services.choices import DATA_RUNTIMES, NodeState, ServiceState
from services.errors import OperationFailed
from services.models import Service

log = logging.getLogger("conpaas.metrics")

LIVE_KEEP = KEEP_SECONDS  # the longest window the routers answer live figures for
RAW_KEEP = 3600  # seconds of raw points
MINUTE_KEEP = 24 * 3600  # seconds of minute averages; older history is dropped
MINUTE = 60
# Minutes rolled up per pass at most: a pass after a long stop catches up over the next ones.
ROLL_UP_BATCH = 60

# The figures of a point and of the live answer, in the API's order.
FIGURES = (
    "requests",
    "request_rate",
    "arrival_rate",
    "served_rate",
    "p50_ms",
    "p95_ms",
    "error_rate",
    "live_connections",
)


def service_metrics(service, window: int = 60, timeout: float | None = None) -> dict:
    """Request rate, p50/p95 response time, error rate, queue timeouts (requests a router answered
    503 because no instance was free in time) and live connections per environment.

    With several routers, rates and connections add up; percentiles are the request-weighted
    mean of each router's (exact with one router, an estimate beyond). Routers log a sample of
    requests, so a router may count requests and have no percentile yet: it is left out of the
    mean, and a percentile stays null until some router has one."""
    merged: dict[str, dict] = {}
    for proxy in running_proxies(service):
        try:
            client = agent.client_for(proxy) if timeout is None else agent.client_for(proxy, timeout=timeout)
            figures = client.proxy_metrics(window)["environments"]
        except agent.AgentError as exc:
            raise OperationFailed(f"the router on {proxy.name} did not answer: {exc}") from exc
        for env, f in figures.items():
            total = merged.setdefault(
                env,
                {
                    "requests": 0,
                    "request_rate": 0.0,
                    "arrival_rate": 0.0,
                    "served_rate": None,
                    "error_rate": 0.0,
                    "live_connections": 0,
                    "queue_timeouts": 0,
                    "p50_ms": None,
                    "p95_ms": None,
                    "_weights": [],
                },
            )
            total["_weights"].append((f["requests"], f["p50_ms"], f["p95_ms"], f["error_rate"]))
            total["requests"] += f["requests"]
            total["request_rate"] += f["request_rate"]
            # Routers older than these two figures leave them out: arrivals are then the requests.
            total["arrival_rate"] += f.get("arrival_rate", f["request_rate"])
            if f.get("served_rate") is not None:
                total["served_rate"] = (total["served_rate"] or 0.0) + f["served_rate"]
            total["live_connections"] += f["live_connections"]
            total["queue_timeouts"] += f.get("queue_timeouts", 0)  # an agent from before it counted them
    for total in merged.values():
        weights = [w for w in total.pop("_weights") if w[0]]
        total["p50_ms"] = _weighted_mean([(w[0], w[1]) for w in weights], 1)
        total["p95_ms"] = _weighted_mean([(w[0], w[2]) for w in weights], 1)
        total["error_rate"] = _weighted_mean([(w[0], w[3]) for w in weights], 4) or 0.0
        for rate in ("request_rate", "arrival_rate", "served_rate"):
            if total[rate] is not None:
                total[rate] = round(total[rate], 3)
    return {"window_seconds": window, "environments": merged}


def _weighted_mean(pairs: list[tuple[float, float | None]], digits: int) -> float | None:
    """The mean of the values weighted by their request counts, over the values known (None: none is)."""
    known = [(weight, value) for weight, value in pairs if value is not None]
    count = sum(weight for weight, _ in known)
    return round(sum(weight * value for weight, value in known) / count, digits) if count else None


# ---------------------------------------------------------------- the kept history


def interval() -> int:
    return max(1, settings.CONPAAS_METRICS_INTERVAL)


def max_points() -> int:
    """The most rows one environment's history holds: an hour of raw points (and those of the
    minute being rolled up, and of one late pass), then a minute average per minute of the day."""
    return math.ceil((RAW_KEEP + 2 * MINUTE) / interval()) + 1 + (MINUTE_KEEP - RAW_KEEP) // MINUTE + 1


def slot(now: datetime) -> datetime:
    """The sampling slot `now` falls in: at most one raw point per environment per slot."""
    seconds = interval()
    return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=UTC)


def sample(service, now: datetime | None = None) -> list[MetricPoint]:
    """Ask the service's routers about the last interval and save one raw point per environment.
    Raises OperationFailed when a router does not answer (nothing is saved then)."""
    at = slot(now or timezone.now())
    figures = service_metrics(service, interval(), timeout=ROUTER_TIMEOUT)["environments"]
    points = [
        MetricPoint(
            service=service,
            environment=name,
            resolution=Resolution.RAW,
            time=at,
            **{figure: values[figure] for figure in FIGURES},
        )
        for name, values in figures.items()
    ]
    # A pass that overlaps another in the same slot saves nothing twice (the unique constraint).
    MetricPoint.objects.bulk_create(points, ignore_conflicts=True)
    return points


def sample_due(now: datetime | None = None) -> list[Service]:
    """The timer's pass: sample every running service not sampled in this slot yet; returns the
    services sampled. A router that does not answer leaves a gap in its service's history."""
    now = now or timezone.now()
    at = slot(now)
    running = (
        Service.objects.filter(state=ServiceState.RUNNING, nodes__is_proxy=True, nodes__state=NodeState.RUNNING)
        .exclude(runtime__in=DATA_RUNTIMES)  # a data service's router counts no HTTP requests
        .distinct()
    )
    done = MetricPoint.objects.filter(resolution=Resolution.RAW, time=at).values("service_id")
    sampled = []
    for service in running.exclude(pk__in=done).select_related("owner"):
        try:
            sample(service, now)
        except OperationFailed as exc:
            log.warning("no metrics for %s: %s", service.name, exc)
            continue
        except Exception:  # one service's trouble never stops the others' sampling
            log.exception("sampling the metrics of %s failed", service.name)
            continue
        sampled.append(service)
    return sampled


def roll_up(now: datetime | None = None) -> int:
    """Raw points past RAW_KEEP become one minute average per environment and minute; minute
    averages past MINUTE_KEEP go. Returns how many minutes were rolled up.

    A minute average at time M stands for the raw points in (M - 60 s, M]; only minutes whose
    every raw point is past RAW_KEEP are rolled up, each once (its raw points go with it)."""
    now = now or timezone.now()
    MetricPoint.objects.filter(resolution=Resolution.MINUTE, time__lt=now - timedelta(seconds=MINUTE_KEEP)).delete()
    # Raw points up to the last minute boundary past RAW_KEEP: whole minutes, all past it.
    cutoff = _minute_end(now - timedelta(seconds=RAW_KEEP), floor=True)
    old = MetricPoint.objects.filter(resolution=Resolution.RAW, time__lte=cutoff)
    rolled = 0
    while rolled < ROLL_UP_BATCH:
        oldest = old.order_by("time").values_list("time", flat=True).first()
        if oldest is None:  # one query when nothing is due: the usual case
            break
        end = _minute_end(oldest)
        minute = old.filter(time__gt=end - timedelta(seconds=MINUTE), time__lte=end)
        groups: dict[tuple[int, str], list[MetricPoint]] = {}
        for point in minute:
            groups.setdefault((point.service_id, point.environment), []).append(point)
        averages = [
            MetricPoint(
                service_id=service_id,
                environment=environment,
                resolution=Resolution.MINUTE,
                time=end,
                **average(points),
            )
            for (service_id, environment), points in groups.items()
        ]
        with transaction.atomic():
            MetricPoint.objects.bulk_create(averages, ignore_conflicts=True)
            minute.delete()
        rolled += 1
    return rolled


def _minute_end(moment: datetime, floor: bool = False) -> datetime:
    """The end M of the minute (M - 60 s, M] that `moment` falls in; with `floor`, the last
    minute boundary at or before it."""
    rounding = math.floor if floor else math.ceil
    return datetime.fromtimestamp(rounding(moment.timestamp() / MINUTE) * MINUTE, tz=UTC)


def average(points) -> dict:
    """One point's figures standing for `points`: requests add up; rates and connections are the
    mean over the points; percentiles and the error rate are weighted by the points' requests."""
    count = len(points)
    weights = [(p.requests, p) for p in points]
    served = [p.served_rate for p in points if p.served_rate is not None]
    return {
        "requests": sum(p.requests for p in points),
        "request_rate": round(sum(p.request_rate for p in points) / count, 3),
        "arrival_rate": round(sum(p.arrival_rate for p in points) / count, 3),
        "served_rate": round(sum(served) / len(served), 3) if served else None,
        "p50_ms": _weighted_mean([(w, p.p50_ms) for w, p in weights if w], 1),
        "p95_ms": _weighted_mean([(w, p.p95_ms) for w, p in weights if w], 1),
        "error_rate": _weighted_mean([(w, p.error_rate) for w, p in weights if w], 4) or 0.0,
        "live_connections": round(sum(p.live_connections for p in points) / count, 2),
    }


def series(
    service, window: int, now: datetime | None = None, environment: str | None = None
) -> dict[str, list[MetricPoint]]:
    """The kept points of each environment (or of one) over the last `window` seconds, oldest
    first: minute averages beyond the last hour, raw points within it."""
    since = (now or timezone.now()) - timedelta(seconds=window)
    points = MetricPoint.objects.filter(service=service, time__gt=since)
    if environment is not None:
        points = points.filter(environment=environment)
    found: dict[str, list[MetricPoint]] = {}
    for point in points.order_by("time", "id"):
        found.setdefault(point.environment, []).append(point)
    return found
