"""What the user sees: aligned tables, JSON for scripts, and the one-line progress of an operation."""

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO | None = None) -> None:
    """Columns padded to their widest cell; the last column is not padded (no trailing blanks)."""
    out = out or sys.stdout
    lines = [[h.upper() for h in headers]] + [[cell(value) for value in row] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    for line in lines:
        padded = [text.ljust(width) for text, width in zip(line[:-1], widths, strict=False)] + [line[-1]]
        print("  ".join(padded).rstrip(), file=out)


def fields(pairs: Sequence[tuple[str, Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name + ':':<{width + 1}} {cell(value)}", file=out)


def symbol(ok: bool, out: TextIO | None = None) -> str:
    """✓ / ✗, or plain words where the terminal's encoding has no such characters."""
    out = out or sys.stdout
    mark = "✓" if ok else "✗"
    try:
        mark.encode(getattr(out, "encoding", None) or "utf-8")
    except (LookupError, UnicodeEncodeError):
        return "ok" if ok else "FAILED"
    return mark


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def short_time(timestamp: str | None) -> str:
    """'2025-01-31T12:34:56.789012Z' -> '2025-01-31 12:34:56'."""
    if not timestamp:
        return "-"
    return timestamp.replace("T", " ")[:19]


class Progress:
    """One status line for an operation, on stderr so that stdout stays for results.

    On a terminal the line is rewritten in place; otherwise (a log, a pipe, a test) every new
    status is printed on its own line, once."""

    TICK_SECONDS = 0.1  # a counter that moves (bytes packed, sent) is redrawn at most this often

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.last = None
        self.drawn = False
        self.ticked = 0.0

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.out.write(f"\r\x1b[K{text}")
            self.drawn = True
        else:
            self.out.write(f"{text}\n")
        self.out.flush()

    def done(self) -> None:
        """Leave the in-place line before the final verdict is printed."""
        if self.tty and self.drawn:
            self.out.write("\r\x1b[K")
            self.out.flush()
            self.drawn = False

    def tick(self, text: str) -> None:
        """A counter on the in-place line of a terminal; elsewhere nothing (a log keeps the `note`s)."""
        now = time.monotonic()
        if self.tty and now - self.ticked >= self.TICK_SECONDS:
            self.ticked = now
            self.show(text)

    def note(self, text: str) -> None:
        """A line that stays: a finished step such as "packed …" or "uploaded …"."""
        self.done()
        self.last = None
        self.out.write(f"{text}\n")
        self.out.flush()
