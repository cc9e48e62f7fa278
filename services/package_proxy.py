"""The package proxy: a build's only way out (versions/builds.py).

proxpi, a PyPI caching mirror, run by `manage.py up` as one of its parts on 127.0.0.1. It reaches
only the package indexes this host's pip is configured for (its index-url and http(s)
extra-index-urls without credentials: `pip config list`, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL) and keeps what it
fetched in CONPAAS_PACKAGE_CACHE, up to CONPAAS_PACKAGE_CACHE_MB. It is no general proxy: a
build asks it for a project's files by name, never for a host.
"""

import subprocess
import sys
from urllib.parse import urlsplit

from django.conf import settings

DEFAULT_INDEX = "https://pypi.org/simple/"


def _pip_config() -> dict[str, str]:
    """pip's own configuration of this host (files and PIP_* variables), as `pip config list`
    prints it: `global.index-url='…'`, `:env:.extra-index-url='…'`."""
    try:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in listed.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        # pip reads the environment over the files, and [install] over [global]
        rank = {":env:": 3, "install": 2, "global": 1}.get(section, 0)
        if rank and rank >= found.get(key, (0, ""))[0]:
            found[key] = (rank, value.strip().strip("'\""))
    return {key: value for key, (_, value) in found.items()}


def indexes() -> tuple[str, list[str]]:
    """The index and the extra indexes proxpi may reach: this host's, those of them it can
    fetch over HTTP (a `file://` index is this host's own folder, never a build's)."""
    config = _pip_config()
    index = config.get("index-url") or DEFAULT_INDEX
    extra = [url for url in config.get("extra-index-url", "").split() if public(url)]
    return (index if public(index) else DEFAULT_INDEX), extra


def public(url: str) -> bool:
    """An index every tenant may use: over HTTP, and with no credentials of the operator's in it
    (a private index stays the operator's own)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and not parts.username and not parts.password


def command(port: int) -> list[str]:
    # One process, several threads: proxpi's cache lives in its memory (its README).
    return [
        sys.executable, "-m", "gunicorn", "services.package_proxy_wsgi:application", "--chdir",
        str(settings.BASE_DIR), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
        "--timeout", "600", "--no-control-socket",
    ]  # fmt: skip


def environment(base: dict[str, str]) -> dict[str, str]:
    index, extra = indexes()
    settings.CONPAAS_PACKAGE_CACHE.mkdir(parents=True, exist_ok=True)
    return {
        **base,
        "PROXPI_INDEX_URL": index,
        "PROXPI_EXTRA_INDEX_URLS": ",".join(extra),
        "PROXPI_CACHE_DIR": str(settings.CONPAAS_PACKAGE_CACHE),
        "PROXPI_CACHE_SIZE": str(settings.CONPAAS_PACKAGE_CACHE_MB * 2**20),
        # Wait for a file however long it takes: the default sends the client to the index
        # itself after 0.9 s, which a build's sandbox cannot reach.
        "PROXPI_DOWNLOAD_TIMEOUT": "600",
        "PROXPI_CONNECT_TIMEOUT": "10",
        "PROXPI_READ_TIMEOUT": "60",
        "PROXPI_LOGGING_LEVEL": "WARNING",
    }
