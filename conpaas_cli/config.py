"""Where the CLI keeps the server URL and the user's API token: a small JSON file only its owner reads."""

import json
import os
from pathlib import Path

from conpaas_cli.errors import CliError, NotLoggedIn


def config_path() -> Path:
    if override := os.environ.get("CONPAAS_CONFIG"):
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "conpaas" / "config.json"


def load() -> dict:
    """The stored login; `NotLoggedIn` when there is none."""
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotLoggedIn() from None
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc} (run: conpaas login URL)", 3) from None
    if not isinstance(data, dict) or not data.get("url") or not data.get("token"):
        raise NotLoggedIn()
    return data


def save(data: dict) -> Path:
    """Write the file readable by its owner only (0600, in a 0700 folder), atomically."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Created with mode 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # in case a stale temporary file with another mode was there
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True
