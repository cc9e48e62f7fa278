"""The commands that isolate local nodes, run as root on this host (ip, nft, useradd …): which
must be installed, how each is run, and the error when one fails."""

import subprocess

TOOLS = ("ip", "nft", "useradd", "userdel", "setpriv", "setsid")


class IsolationError(Exception):
    """A node's user, namespace or cgroups could not be set up or removed."""


def run(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise IsolationError(f"{' '.join(argv[:4])}… failed: {result.stderr.strip() or result.returncode}")
    return result
