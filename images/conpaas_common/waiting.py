"""Waiting on a condition: the agent, the control plane, the tests and the benchmarks share this
one loop. Standard library only."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, message: str | None = None
) -> T:
    """Call ``condition`` until it returns a true value, and return that value.

    At ``timeout`` seconds it gives up: with a ``message`` (what was awaited) it raises
    ``TimeoutError``; without one it returns the last, false, value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            if message is None:
                return value
            raise TimeoutError(f"timed out after {timeout} s waiting for {message} (last: {value!r})")
        time.sleep(interval)
