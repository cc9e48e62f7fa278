"""An open-loop load generator for the integration tests and the benchmarks.

Requests leave at a fixed rate whatever the answers take: a closed loop (N clients, each waiting
for its answer) slows down with the server it measures and never builds the queue an overload
makes. One asyncio loop in a thread sends each request on a new connection (`Connection: close`,
as a browser's first request does), so a thousand requests in flight cost a thousand sockets and
no thread each. Stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request was due
    seconds: float  # until the whole answer was read, or the failure
    status: int | None  # None: no HTTP answer (refused, reset, timed out)
    body: bytes = b""
    error: str = ""


class OpenLoop:
    """`rate` requests a second to `url` (http://host[:port]/path) until `stop()`.

    Each answer is kept (`answers`); `stop()` waits for the requests in flight (at most
    `timeout` seconds each) and returns them all."""

    def __init__(self, url: str, rate: float, timeout: float = 15.0, headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        self.request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}Connection: close\r\n\r\n".encode()
        self.rate = rate
        self.timeout = timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # A request in flight holds a socket: allow as many as the hard limit does.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def start(self) -> OpenLoop:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="open-loop", daemon=True)
        self._thread.start()
        return self

    def set_rate(self, rate: float) -> None:
        """From the next request on, `rate` requests a second (a load that steps up or down)."""
        self.rate = rate

    def stop(self) -> list[Answer]:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)
        return self.snapshot()

    def snapshot(self, since: float = 0.0) -> list[Answer]:
        """The answers so far to the requests due at `since` (time.monotonic()) or later."""
        with self._lock:
            return [answer for answer in self.answers if answer.sent >= since]

    async def _run(self) -> None:
        pending = set()
        rate, began, sent = self.rate, time.monotonic(), 0
        while not self._stopping.is_set():
            if self.rate != rate:  # a new rate counts from the last request due
                rate, began, sent = self.rate, began + sent / rate, 0
            due = began + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(due))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending)

    async def _one(self, due: float) -> None:
        status, body, error = None, b"", ""
        writer = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                writer.write(self.request)
                await writer.drain()
                raw = await reader.read()  # the server closes after the answer
            head, _, body = raw.partition(b"\r\n\r\n")
            fields = head.split(b" ", 2)
            if len(fields) >= 2 and fields[1].isdigit():
                status = int(fields[1])
            else:
                error = f"no HTTP answer ({len(raw)} bytes)"
        except TimeoutError:
            error = f"no answer within {self.timeout:.0f} s"
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        answer = Answer(due, time.monotonic() - due, status, body, error)
        with self._lock:
            self.answers.append(answer)


def tally(answers: list[Answer]) -> Counter:
    """How many answers of each status ("error" for no HTTP answer)."""
    return Counter(answer.status if answer.status is not None else "error" for answer in answers)
