"""Process helpers shared by the agent and the local cloud driver (standard library only)."""

import os


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which has exited and only waits to be reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except OSError:
        pass
    return True
