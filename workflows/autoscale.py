"""Autoscaling a service's backend nodes to a p95 response-time target.

`decide` is the rule, a pure function of the policy, the production environment's kept metric
points (routing/metrics.py), the node count and the clock; `evaluate` feeds it from the database
after each metrics sample and carries its decision out through the one scaling workflow
(`workflows.scaling.request_scale`), as the API, the console and the CLI do. `configure` is how
the API, the console and the CLI change a policy.

The rule, in short:
- Scale out when the p95 of the last WINDOW seconds misses the target and so do the last two
  samples taken since the last scaling. In the samples where the service is saturated (its
  instances answer fewer requests than arrive), a node's capacity is the most they answered
  divided by the nodes; the service then gets in one step the fewest nodes that serve the
  window's peak arrival rate at UTILISATION of that capacity. Without a measured capacity it grows by one node
  at a time. A service whose instances answer more than arrives is draining a backlog: it waits.
- Scale in only when the p95 of the whole cool-down is under IN_FRACTION of the target, no
  scaling happened during the cool-down, and the peak arrival rate of the cool-down fits on
  fewer nodes at UTILISATION of the measured capacity (without one: one node fewer).
- Between the two thresholds nothing changes: that band, the cool-down before a scale-in, and
  sizing with headroom keep it from flapping.
"""

import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from routing.models import MetricPoint, Resolution
from services.choices import NodeState, OperationKind, Outcome, ServiceState
from services.errors import Conflict, ConpaasError
from services.models import Event, Operation, Service, active_operations
from versions.models import PRODUCTION
from workflows.models import Autoscaling
from workflows.scaling import request_scale

log = logging.getLogger("conpaas.autoscale")

WINDOW = 20  # seconds of samples the p95 of a scale-out is judged on
MIN_SAMPLES = 2  # samples since the last scaling needed before judging again
IN_FRACTION = 0.6  # "comfortably under": the p95 of the cool-down under this share of the target
UTILISATION = 0.8  # size for this share of a node's measured capacity: headroom against queueing
SATURATED = 0.9  # answering under this share of the arrivals: requests pile up or fail
DRAINING = 1.1  # answering over this share of the arrivals: a backlog is being worked off

# A decision's action; LIMITED: over the target at the maximum, an event when it begins.
OUT, IN, HOLD, LIMITED = "out", "in", "hold", "limited"
# What a user sets (the API, the console, the CLI); the rest of the row is the autoscaler's.
POLICY_FIELDS = ("enabled", "target_p95_ms", "min_nodes", "max_nodes", "cooldown_s")


@dataclass(frozen=True)
class Sample:
    """One kept metric point of production: `time` in seconds (any epoch, the clock's)."""

    time: float
    requests: int
    arrival_rate: float
    served_rate: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class Policy:
    target_p95_ms: int
    min_nodes: int
    max_nodes: int
    cooldown_s: int
    node_capacity: float | None = None


@dataclass(frozen=True)
class Decision:
    action: str  # out | in | hold | limited
    nodes: int  # the backend nodes wanted (the current count when holding)
    reason: str
    figures: dict = field(default_factory=dict)
    node_capacity: float | None = None  # the capacity to remember

    @property
    def scales(self) -> bool:
        return self.action in (OUT, IN)


def decide(policy: Policy, samples: list[Sample], nodes: int, now: float, last_scaled: float | None) -> Decision:
    """What to do with a service running `nodes` backend nodes, given its production samples
    (oldest first) and when its node count last changed (None: never)."""
    capacity = policy.node_capacity

    def hold(reason: str, figures: dict | None = None) -> Decision:
        return Decision(HOLD, nodes, reason, figures or {}, capacity)

    if nodes < policy.min_nodes:
        return Decision(OUT, policy.min_nodes, f"below the minimum of {policy.min_nodes} node(s)", {}, capacity)
    if nodes > policy.max_nodes:
        return Decision(IN, policy.max_nodes, f"above the maximum of {policy.max_nodes} node(s)", {}, capacity)
    # Only what the current nodes did counts: samples since the scaling settled.
    fresh = [s for s in samples if last_scaled is None or s.time >= last_scaled + settings.CONPAAS_METRICS_INTERVAL]
    recent = [s for s in fresh if s.time > now - WINDOW]
    if len(recent) < MIN_SAMPLES:
        return hold("waiting for figures since the last change")
    figures = _figures(recent, nodes)
    p95, arrivals, served = figures["p95_ms"], figures["arrival_rate"], figures["served_rate"]
    target = policy.target_p95_ms

    if p95 is not None and p95 > target:
        if served is not None and served > DRAINING * arrivals:
            return hold(f"over the target of {target} ms while a backlog drains", figures)
        # Confirmed by the latest samples: the first one after a step up still holds calmer seconds.
        if not all(s.p95_ms is not None and s.p95_ms > target for s in recent[-MIN_SAMPLES:]):
            return hold(f"over the target of {target} ms in the window; waiting for the next sample", figures)
        # Samples in which the nodes answered less than arrived: what they answered is all they can.
        saturated = [s for s in recent if s.served_rate and s.served_rate < SATURATED * s.arrival_rate]
        if saturated:
            figures["served_rate"] = round(max(s.served_rate for s in saturated), 1)
            capacity = figures["served_rate"] / nodes
        # Size for the load as it is now: just after a step up the window still holds calmer samples.
        demand = figures["arrival_rate"] = round(max(s.arrival_rate for s in recent), 1)
        figures["node_capacity"] = _round(capacity)
        if nodes >= policy.max_nodes:
            reason = f"over the target of {target} ms at the maximum of {policy.max_nodes} node(s)"
            return Decision(LIMITED, nodes, reason, figures, capacity)
        wanted = nodes + 1 if capacity is None else math.ceil(demand / (capacity * UTILISATION))
        wanted = min(policy.max_nodes, max(nodes + 1, wanted))
        return Decision(OUT, wanted, f"over the target of {target} ms", figures, capacity)

    # A node held this many requests a second within the target: it can at least that.
    if capacity is not None and arrivals / nodes > capacity:
        capacity = arrivals / nodes
    figures["node_capacity"] = _round(capacity)
    if last_scaled is not None and now - last_scaled < policy.cooldown_s:
        return Decision(HOLD, nodes, "within the target; cooling down since the last change", figures, capacity)
    span = max(policy.cooldown_s, WINDOW)
    calm = [s for s in fresh if s.time > now - span]
    calm_figures = {**_figures(calm, nodes), "node_capacity": _round(capacity)}
    calm_p95 = calm_figures["p95_ms"]
    if nodes <= policy.min_nodes or (calm_p95 is not None and calm_p95 > IN_FRACTION * target):
        return Decision(HOLD, nodes, "within the target", figures, capacity)
    peak = max(s.arrival_rate for s in calm)
    wanted = nodes - 1 if capacity is None else math.ceil(peak / (capacity * UTILISATION))
    wanted = max(policy.min_nodes, wanted)
    if wanted >= nodes:
        return Decision(HOLD, nodes, "within the target, with no node to spare", figures, capacity)
    calm_figures["peak_arrival_rate"] = round(peak, 1)
    reason = f"under {IN_FRACTION * target:.0f} ms ({IN_FRACTION:.0%} of the target) for {span} s"
    return Decision(IN, wanted, reason, calm_figures, capacity)


def _figures(samples: list[Sample], nodes: int) -> dict:
    """The request-weighted p95 of the samples, and their mean arrival and served rates."""
    timed = [(s.requests, s.p95_ms) for s in samples if s.requests and s.p95_ms is not None]
    count = sum(weight for weight, _ in timed)
    served = [s.served_rate for s in samples if s.served_rate is not None]
    return {
        "p95_ms": round(sum(w * p for w, p in timed) / count, 1) if count else None,
        "arrival_rate": round(sum(s.arrival_rate for s in samples) / len(samples), 1) if samples else 0.0,
        "served_rate": round(sum(served) / len(served), 1) if served else None,
        "nodes": nodes,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def describe(decision: Decision, nodes: int) -> str:
    """The decision with the figures behind it, for its event."""
    f = decision.figures
    parts = []
    if f.get("p95_ms") is not None:
        parts.append(f"p95 {f['p95_ms']:.0f} ms")
    if "arrival_rate" in f:
        parts.append(f"{f['arrival_rate']} req/s arriving")
    if f.get("served_rate") is not None:
        parts.append(f"{f['served_rate']} answered")
    if f.get("node_capacity") is not None:
        parts.append(f"a node answers about {f['node_capacity']} req/s")
    behind = f" ({', '.join(parts)})" if parts else ""
    if decision.action == LIMITED:
        return f"autoscale: {decision.reason}{behind}"
    verb = {OUT: "scale out", IN: "scale in", HOLD: "hold"}[decision.action]
    return f"autoscale: {verb} {nodes} → {decision.nodes} backend node(s): {decision.reason}{behind}"


# ---------------------------------------------------------------- the database side


def configure(service: Service, user, **values) -> Autoscaling:
    """Change the service's policy: the fields given, the others kept (or their defaults).
    Raises ValidationError keyed by field; saves nothing then."""
    if service.is_data:
        raise Conflict(f"a {service.runtime} service has no autoscaling: no router measures its requests")
    with transaction.atomic():
        # Locked, so two changes at once apply one after the other; a refusal rolls the new row back.
        policy, _ = Autoscaling.objects.select_for_update().get_or_create(service=service)
        for name in POLICY_FIELDS:
            if name in values:
                setattr(policy, name, values[name])
        policy.validate()
        policy.updated = timezone.now()
        # Not the autoscaler's own fields: it may have just saved a decision.
        policy.save(update_fields=[*POLICY_FIELDS, "updated"])
        if policy.enabled:
            message = (
                f"autoscaling on: p95 target {policy.target_p95_ms} ms, {policy.min_nodes} to "
                f"{policy.max_nodes} backend node(s), cool-down {policy.cooldown_s} s"
            )
        else:
            message = "autoscaling off"
        Event.record(service, "autoscale", message, actor=user)
    return policy


def backend_count(service: Service) -> int:
    return service.backend_node_list().filter(state=NodeState.RUNNING).count()


def last_scaled(service: Service) -> datetime | None:
    """When the service's node count last changed: the end of its last scale operation, the
    autoscaler's or anyone's."""
    scale = Operation.objects.filter(service=service, kind=OperationKind.SCALE).order_by("-created", "-id").first()
    return scale.finished if scale else None


def samples(service: Service, since: datetime) -> list[Sample]:
    points = MetricPoint.objects.filter(
        service=service, environment=PRODUCTION, resolution=Resolution.RAW, time__gt=since
    ).order_by("time")
    return [
        Sample(p.time.timestamp(), p.requests, p.arrival_rate, p.served_rate, p.p95_ms)
        for p in points.only("time", "requests", "arrival_rate", "served_rate", "p95_ms")
    ]


def evaluate(service: Service, now: datetime | None = None) -> Decision | None:
    """Decide for one service by its policy (None: not autoscaled, or busy), save the decision,
    and carry it out. A decision to scale is an Event with the figures behind it."""
    now = now or timezone.now()
    policy = Autoscaling.objects.filter(service=service, enabled=True).first()
    if policy is None or service.state != ServiceState.RUNNING:
        return None
    if active_operations().filter(service=service).exists():
        return None  # an operation changes the service: judge what it leaves behind
    nodes = backend_count(service)
    scaled = last_scaled(service)
    since = now - timedelta(seconds=max(policy.cooldown_s, WINDOW) + settings.CONPAAS_METRICS_INTERVAL)
    rule = Policy(policy.target_p95_ms, policy.min_nodes, policy.max_nodes, policy.cooldown_s, policy.node_capacity)
    decision = decide(rule, samples(service, since), nodes, now.timestamp(), scaled.timestamp() if scaled else None)
    record = {"time": now.isoformat(), "from_nodes": nodes, **asdict(decision)}
    record.pop("node_capacity")
    previous = (policy.last_decision or {}).get("action")
    # Only if the policy is still on: a user may have turned it off meanwhile.
    saved = Autoscaling.objects.filter(pk=policy.pk, enabled=True).update(
        last_decision=record, node_capacity=decision.node_capacity
    )
    message = describe(decision, nodes)
    if saved and decision.action == LIMITED and previous != LIMITED:
        Event.record(service, "autoscale", message, Outcome.FAILED)
    if not saved or not decision.scales:
        return decision
    try:
        with transaction.atomic():
            Event.record(service, "autoscale", message)
            request_scale(service, "backend", decision.nodes, None)
    except ConpaasError as exc:  # a quota, a deletion under way: nothing requested
        Event.record(service, "autoscale", f"{message}; not done: {exc}", Outcome.FAILED)
    return decision


def evaluate_all(services, now: datetime | None = None) -> int:
    """`evaluate` each of `services` that has autoscaling on; returns how many decided to scale."""
    scaled = 0
    if not services:
        return 0
    enabled = set(Autoscaling.objects.filter(service__in=services, enabled=True).values_list("service_id", flat=True))
    for service in services:
        if service.pk not in enabled:
            continue
        try:
            decision = evaluate(service, now)
        except Exception:  # one service's trouble never stops the others' autoscaling
            log.exception("autoscaling %s failed", service.name)
            continue
        scaled += bool(decision and decision.scales)
    return scaled
