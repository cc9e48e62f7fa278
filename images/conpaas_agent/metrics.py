"""Request metrics of the router, per backend over the last minutes.

Counts come from HAProxy's own counters: every second (and on each query) the agent reads
``show info`` and ``show stat`` in one request on the admin socket (so both answers come from
the same worker) and keeps, per backend, a running total of ``req_tot`` (HTTP requests the
backend took, retries not counted again; ``stot`` when absent), ``hrsp_5xx`` (5xx answers,
those HAProxy made itself included, e.g. 503 with no server up) and ``queue_timeouts`` (503
answers at the queue timeout, a counter of our own: router/config.py), with their history over
``KEEP_SECONDS`` (the longest window the API accepts). A new worker (a reload or a restart: its
counters start again from zero) is seen by its pid, and its counters add on to the totals; what
an old worker serves after the last poll before a reload is not counted.

The requests of a window are the difference of the totals between the first poll inside the
window and the last poll, and the request rate divides them by the time between those two polls
(the span actually covered: at most the window, within a poll interval of it once the history
is that long), so neither is overstated.

Under the router's queue (a connection limit per server) ``req_tot`` counts a request when it
leaves the queue for a server, so two more figures say what load the service is under: the
arrival rate, from the backend's ``stot`` (every request that reached the backend, queued or
not), and the served rate, answers that instances gave (HAProxy's own 502/503/504 and aborted
requests left out), from the sampled log lines, which are written when a request ends. The
autoscaler sizes a service by the one and the other (workflows/autoscale.py).

An error is a 5xx answer, HAProxy's own included; a request the client aborted before any
answer (status -1 in the log) is a request, not an error. The counters and the log use that
same definition.

Slots are reused: when the proxy gives a slot to another version it calls ``restart``, and
the slot's figures start afresh (history and samples), so a new version's metrics never include
the retired version's traffic.

Percentiles need the requests themselves, and HAProxy only reports averages: HAProxy logs
one request in ``LOG_SAMPLE`` (``log … sample 1:N``) as one datagram to a unix socket the
agent reads. Sampling keeps the per-request cost small (a datagram per request, read and
parsed in Python, cost about as much CPU as the rest of the proxying); the percentiles of a
1-in-N sample estimate those of all requests. If the agent is down, the datagrams are
dropped and serving goes on unaffected.

Without a stats source (``stats=None``) the counts are the sampled log lines times
``sample``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
import time

from conpaas_common.wire import KEEP_SECONDS

log = logging.getLogger("conpaas_agent.metrics")

# What HAProxy writes for each logged request (after the syslog header): backend, total active
# time in ms (Ta), HTTP status.
LOG_FORMAT = "conpaas %b %Ta %ST"
# HAProxy logs one request in LOG_SAMPLE (render_config: `log … sample 1:LOG_SAMPLE`).
LOG_SAMPLE = 8
MAX_SAMPLES = 200_000  # per backend: bounded memory under any load
POLL_SECONDS = 1.0
# Polls closer than this (a query polls too) replace the newest point rather than add one: at
# most two points per MIN_POINT_GAP per backend, whatever the query rate.
MIN_POINT_GAP = 1.0
# A worker older than this when first seen (an agent restart adopting a running HAProxy):
# its counters so far are not counted as requests of the current window.
FRESH_WORKER_SECONDS = 5
# Answers HAProxy makes itself (no server, a queue or connect timeout): not served by an instance.
HAPROXY_FAILURES = (502, 503, 504)


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    if not sorted_values:
        return None
    # Nearest rank: the smallest value with at least `fraction` of the values at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


# The per-backend counters kept, in this order: HTTP requests, 5xx answers, queue timeouts,
# arrivals (streams that reached the backend, those waiting in its queue included).
COUNTED = 4


class Counters:
    """Running totals (requests, 5xx, queue timeouts, arrivals) of HAProxy's per-backend counters
    across workers, with their history: (monotonic time, requests, errors, queue timeouts,
    arrivals) points, one per poll."""

    def __init__(self):
        self.worker: str | None = None
        self.last: dict[str, tuple[int, ...]] = {}  # backend -> the worker's counters at the last poll
        self.totals: dict[str, list[int]] = {}  # backend -> the COUNTED totals since the agent started
        self.history: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def observe(self, info: dict[str, str], rows: list[dict[str, str]], now: float) -> None:
        worker = info.get("Pid")
        try:
            uptime = int(info.get("Uptime_sec") or 0)
        except ValueError:
            uptime = 0
        new_worker = worker != self.worker
        # The first worker seen, when it has been running a while: start counting from here.
        adopted = new_worker and self.worker is None and uptime > FRESH_WORKER_SECONDS
        self.worker = worker
        if new_worker:
            self.last = {}
        for row in rows:
            if row.get("svname") != "BACKEND":
                continue
            backend = row.get("pxname", "")
            try:
                requests = int(row.get("req_tot") or row.get("stot") or 0)  # req_tot: HTTP requests (2.6)
                errors, timeouts = int(row.get("hrsp_5xx") or 0), int(row.get("queue_timeouts") or 0)
                current = (requests, errors, timeouts, int(row.get("stot") or requests))
            except ValueError:
                continue
            zero = (0,) * COUNTED
            history = self.history[backend]
            if backend not in self.totals:
                self.totals[backend] = list(zero)
                self.last[backend] = current if adopted else zero
                history.append((now, *zero))
            previous = self.last.get(backend, zero)
            if any(c < p for c, p in zip(current, previous, strict=True)):
                previous = zero  # counters cleared under the same pid (`clear counters`)
            total = self.totals[backend]
            for index in range(COUNTED):
                total[index] += current[index] - previous[index]
            self.last[backend] = current
            point = (now, *total)
            if len(history) >= 2 and now - history[-2][0] < MIN_POINT_GAP:
                history[-1] = point
            else:
                history.append(point)
            while len(history) > 1 and history[0][0] < now - KEEP_SECONDS:
                history.popleft()

    def between(self, backend: str, since: float) -> tuple[int, int, int, int, float] | None:
        """(requests, errors, queue timeouts, arrivals, seconds covered) from the first point at
        or after `since` to the last one, or None if never seen."""
        history = self.history.get(backend)
        if not history:
            return None
        end = history[-1]
        start = next((point for point in history if point[0] >= since), end)
        return (*(end[i] - start[i] for i in range(1, COUNTED + 1)), end[0] - start[0])

    def restart(self, backend: str) -> None:
        """Forget the backend's history: its figures start from the last poll."""
        history = self.history.get(backend)
        if history:
            self.history[backend] = collections.deque([history[-1]])


class RequestLog:
    def __init__(self, socket_path: str, stats=None, sample: int = 1):
        """``stats``: a callable returning (``show info`` as a dict, ``show stat`` rows), or None;
        ``sample``: HAProxy logs one request in ``sample``."""
        self.socket_path = socket_path
        self.stats = stats
        self.sample = max(1, int(sample))
        self.samples: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=MAX_SAMPLES)
        )
        self.counters = Counters()
        self.restarted: dict[str, float] = {}  # backend -> when its figures started afresh
        self.lock = threading.Lock()
        self.poll_lock = threading.Lock()
        self.sock: socket.socket | None = None

    def start(self) -> None:
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        threading.Thread(target=self._receive, name="request-log", daemon=True).start()
        if self.stats is not None:
            threading.Thread(target=self._poll_forever, name="request-counters", daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                datagram = self.sock.recv(4096)
            except OSError:
                return
            self.record_line(datagram.decode("utf-8", "replace"))

    def _poll_forever(self) -> None:
        while True:
            self.poll()
            time.sleep(POLL_SECONDS)

    def poll(self, now: float | None = None) -> bool:
        """Read HAProxy's counters once; False when HAProxy did not answer."""
        if self.stats is None:
            return False
        with self.poll_lock:
            try:
                info, rows = self.stats()
            except Exception as exc:  # noqa: BLE001 - HAProxy down or restarting: try again later
                log.debug("no counters from HAProxy: %s", exc)
                return False
            self.record_counters(info, rows, now)
            return True

    def record_counters(self, info: dict[str, str], rows: list[dict[str, str]], now: float | None = None) -> None:
        with self.lock:
            self.counters.observe(info, rows, time.monotonic() if now is None else now)

    def restart(self, backends: list[str], now: float | None = None) -> None:
        """The backends now serve another version: their figures start afresh, from a poll made
        now (what the previous version served up to here is left out)."""
        self.poll(now)
        with self.lock:
            for backend in backends:
                self.counters.restart(backend)
                self.samples.pop(backend, None)
                self.restarted[backend] = time.monotonic() if now is None else now

    def record_line(self, line: str, now: float | None = None) -> None:
        marker = line.rfind("conpaas ")
        if marker < 0:
            return
        fields = line[marker:].split()
        if len(fields) < 4:
            return
        try:
            active_ms, status = int(fields[2]), int(fields[3])
        except ValueError:
            return
        with self.lock:
            self.samples[fields[1]].append((time.monotonic() if now is None else now, active_ms, status))

    def summary(self, window: float = 60.0, now: float | None = None) -> dict[str, dict]:
        """Per backend over the last `window` seconds: requests, rate, p50/p95 ms (None when no
        request of the window was sampled), error rate, queue timeouts."""
        if now is None:
            self.poll()  # counts up to this very moment
            now = time.monotonic()
        since = now - window
        out = {}
        with self.lock:
            for backend in set(self.samples) | set(self.counters.history):
                samples = self.samples.get(backend) or collections.deque()
                while samples and samples[0][0] < now - KEEP_SECONDS:
                    samples.popleft()
                recent = [(ms, status) for at, ms, status in samples if at >= since]
                logged_span = now - max(since, self.restarted.get(backend, since))
                counted = self.counters.between(backend, since)
                if counted is not None:
                    requests, errors, queue_timeouts, arrivals, span = counted
                else:  # no counters: the log tells no queue timeout apart
                    requests, queue_timeouts = len(recent) * self.sample, 0
                    arrivals = requests
                    errors = sum(1 for _, status in recent if status >= 500) * self.sample
                    span = logged_span
                if not (requests or arrivals) or span <= 0:  # span 0: a single poll, no interval to count over
                    continue
                times = sorted(ms for ms, _ in recent if ms >= 0)
                served = sum(1 for _, status in recent if status >= 0 and status not in HAPROXY_FAILURES)
                out[backend] = {
                    "requests": requests,
                    "request_rate": round(requests / span, 3),
                    "arrival_rate": round(max(arrivals, requests) / span, 3),
                    "served_rate": round(served * self.sample / logged_span, 3) if logged_span > 0 else None,
                    "p50_ms": percentile(times, 0.50),
                    "p95_ms": percentile(times, 0.95),
                    "error_rate": round(min(1.0, errors / max(requests, 1)), 4),
                    "queue_timeouts": queue_timeouts,
                }
        return out
