"""Live metrics per environment, from the request logs of the service's routers."""

from routing.table import running_proxies
from services import agent
from services.errors import OperationFailed


def service_metrics(service, window: int = 60) -> dict:
    """Request rate, p50/p95 response time, error rate and live connections per environment.

    With several routers, rates and connections add up; percentiles are the request-weighted
    mean of each router's (exact with one router, an estimate beyond)."""
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
                    "p50_ms": None,
                    "p95_ms": None,
                    "_weights": [],
                },
            )
            total["_weights"].append((f["requests"], f["p50_ms"], f["p95_ms"], f["error_rate"]))
            total["requests"] += f["requests"]
            total["request_rate"] += f["request_rate"]
            total["live_connections"] += f["live_connections"]
    for total in merged.values():
        weights = [w for w in total.pop("_weights") if w[0]]
        count = sum(w[0] for w in weights)
        if count:
            total["p50_ms"] = round(sum(w[0] * w[1] for w in weights) / count, 1)
            total["p95_ms"] = round(sum(w[0] * w[2] for w in weights) / count, 1)
            total["error_rate"] = round(sum(w[0] * w[3] for w in weights) / count, 4)
        total["request_rate"] = round(total["request_rate"], 3)
    return {"window_seconds": window, "environments": merged}
