"""Charts of the kept metrics, drawn on the server as SVG: coordinates computed here, the
template (console/fragments/metrics.html) writes the <svg>. No script, no library, no build step."""

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from routing.models import Resolution

WIDTH, HEIGHT = 600, 120  # the SVG's viewBox; the page scales it to its column
# The windows the service page offers, in seconds, with their labels.
WINDOWS = {900: "15 min", 3600: "1 hour", 86400: "24 hours"}
DEFAULT_WINDOW = 3600


@dataclass
class Line:
    name: str
    style: str  # a CSS class: solid, dashed, target
    segments: list[str]  # SVG polyline points, one string per unbroken run of points
    latest: float | None = None


@dataclass
class Chart:
    title: str
    unit: str
    lines: list[Line] = field(default_factory=list)
    top: float = 0.0  # the value at the top of the chart

    @property
    def empty(self) -> bool:
        return not any(line.segments for line in self.lines)

    @property
    def description(self) -> str:
        """What the chart shows, in words, for those who cannot see it."""
        said = [
            f"{line.name} now {_format(line.latest)} {self.unit}"
            for line in self.lines
            if line.latest is not None and line.style != "target"
        ]
        return "; ".join(said) or "no requests"


def _format(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2g}" if value else "0"


def nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at or above `value` (1 for nothing): a round axis top."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def charts(points: list, window: int, now: datetime, interval: int, target_ms: int | None = None) -> list[Chart]:
    """The four charts of one environment's kept points over the last `window` seconds: request
    rate, p50/p95 response time (with the autoscaling target, if any), 5xx share, connections."""
    start = now - timedelta(seconds=window)

    def x(moment: datetime) -> float:
        return round(max(0.0, (moment - start).total_seconds()) / window * WIDTH, 1)

    def line(name: str, style: str, values: list[tuple[datetime, float | None, float]], top: float) -> Line:
        """Points with no value, or further apart than their spans, break the line."""
        segments, run, previous = [], [], None

        def close():
            if len(run) == 1:  # a lone point: drawn across the span it stands for
                moment, y, seconds = run[0]
                segments.append(f"{x(moment - timedelta(seconds=seconds))},{y} {x(moment)},{y}")
            elif run:
                segments.append(" ".join(f"{x(moment)},{y}" for moment, y, _ in run))

        for moment, value, seconds in values:
            if value is None or (previous is not None and (moment - previous).total_seconds() > 2.5 * seconds):
                close()
                run = []
            if value is not None:
                run.append((moment, round(HEIGHT - value / top * HEIGHT, 1), seconds))
            previous = moment
        close()
        known = [value for _, value, _ in values if value is not None]
        return Line(name, style, segments, known[-1] if known else None)

    def span(point) -> int:
        return 60 if point.resolution == Resolution.MINUTE else interval

    def chart(title: str, unit: str, figures: list[tuple[str, str, str]], scale: float = 1.0, floor=None) -> Chart:
        def value(point, figure):
            found = getattr(point, figure)
            return None if found is None else found * scale

        series = {figure: [(p.time, value(p, figure), span(p)) for p in points] for _, _, figure in figures}
        highest = max((v for values in series.values() for _, v, _ in values if v is not None), default=0.0)
        top = nice_top(max(highest, floor or 0.0) * 1.05)
        result = Chart(title, unit, top=top)
        result.lines = [line(name, style, series[figure], top) for name, style, figure in figures]
        return result

    response = chart("Response time", "ms", [("p95", "solid", "p95_ms"), ("p50", "dashed", "p50_ms")], floor=target_ms)
    if target_ms:
        y = round(HEIGHT - target_ms / response.top * HEIGHT, 1)
        response.lines.append(Line(f"target {target_ms} ms", "target", [f"0,{y} {WIDTH},{y}"], target_ms))
    return [
        chart("Requests", "req/s", [("requests", "solid", "request_rate")]),
        response,
        chart("Server errors (5xx)", "%", [("5xx", "solid", "error_rate")], scale=100.0),
        chart("Live connections", "", [("connections", "solid", "live_connections")]),
    ]
