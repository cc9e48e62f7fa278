"""Request metrics of the router: HAProxy logs every request to a unix datagram socket the
agent reads, and the agent keeps the last minutes per backend for rates and percentiles.

HAProxy only reports averages; percentiles need the requests themselves. If the agent is
down, HAProxy's log datagrams are dropped and serving goes on unaffected.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
import time

log = logging.getLogger("conpaas_agent.metrics")

# What HAProxy writes for each request (after the syslog header): backend, total active time
# in ms (Ta), HTTP status.
LOG_FORMAT = "conpaas %b %Ta %ST"
KEEP_SECONDS = 300
MAX_SAMPLES = 200_000  # per backend: bounded memory under any load


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    if not sorted_values:
        return None
    # Nearest rank: the smallest value with at least `fraction` of the values at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return float(sorted_values[index])


class RequestLog:
    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.samples: dict[str, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=MAX_SAMPLES)
        )
        self.lock = threading.Lock()
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

    def _receive(self) -> None:
        while True:
            try:
                datagram = self.sock.recv(4096)
            except OSError:
                return
            self.record_line(datagram.decode("utf-8", "replace"))

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
        """Per backend over the last `window` seconds: requests, rate, p50/p95 ms, error rate."""
        now = time.monotonic() if now is None else now
        since = now - window
        out = {}
        with self.lock:
            for backend, samples in self.samples.items():
                while samples and samples[0][0] < now - KEEP_SECONDS:
                    samples.popleft()
                recent = [(ms, status) for at, ms, status in samples if at >= since]
                if not recent:
                    continue
                times = sorted(ms for ms, _ in recent if ms >= 0)
                errors = sum(1 for _, status in recent if status >= 500 or status < 0)
                out[backend] = {
                    "requests": len(recent),
                    "request_rate": round(len(recent) / window, 3),
                    "p50_ms": percentile(times, 0.50),
                    "p95_ms": percentile(times, 0.95),
                    "error_rate": round(errors / len(recent), 4),
                }
        return out
