"""Live metrics per environment, from the request logs of the service's routers."""

from routing.table import running_proxies
from services import agent
from services.errors import OperationFailed


def service_metrics(service, window: int = 60) -> dict:
    """Request rate, p50/p95 response time, error rate, queue timeouts (requests a router answered
    503 because no instance was free in time) and live connections per environment.

    With several routers, rates and connections add up; percentiles are the request-weighted
    mean of each router's (exact with one router, an estimate beyond). Routers log a sample of
    requests, so a router may count requests and have no percentile yet: it is left out of the
    mean, and a percentile stays null until some router has one."""
    merged: dict[str, dict] = {}
    for proxy in running_proxies(service):
        try:
            figures = agent.client_for(proxy).proxy_metrics(window)["environments"]
        except agent.AgentError as exc:
            raise OperationFailed(f"the router on {proxy.name} did not answer: {exc}") from exc
        for env, f in figures.items():
            total = merged.setdefault(
                env,
                {
                    "requests": 0,
                    "request_rate": 0.0,
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
            total["live_connections"] += f["live_connections"]
            total["queue_timeouts"] += f.get("queue_timeouts", 0)  # an agent from before it counted them
    for total in merged.values():
        weights = [w for w in total.pop("_weights") if w[0]]
        total["p50_ms"] = _weighted_mean([(w[0], w[1]) for w in weights], 1)
        total["p95_ms"] = _weighted_mean([(w[0], w[2]) for w in weights], 1)
        total["error_rate"] = _weighted_mean([(w[0], w[3]) for w in weights], 4) or 0.0
        total["request_rate"] = round(total["request_rate"], 3)
    return {"window_seconds": window, "environments": merged}


def _weighted_mean(pairs: list[tuple[int, float | None]], digits: int) -> float | None:
    """The mean of the values weighted by their request counts, over the values known (None: none is)."""
    known = [(weight, value) for weight, value in pairs if value is not None]
    count = sum(weight for weight, _ in known)
    return round(sum(weight * value for weight, value in known) / count, digits) if count else None
