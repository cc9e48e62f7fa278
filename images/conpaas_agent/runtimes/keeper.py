"""keeper.py PROGRAM [ARG...]: run PROGRAM, which leaves its process group, tied to this process,
which stays in it.

php-fpm calls setsid() even in the foreground, so it would leave the node's process group, which
the local cloud kills to destroy a node (images/README.md, Boot). The keeper stays in the group:
each signal it gets it passes on to the program, and should the keeper itself be killed, the
kernel kills the program (PR_SET_PDEATHSIG). It exits as the program does.

A script of its own (the agent runs it with its interpreter): standard library only, no imports
from its package.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
PASSED_ON = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: keeper.py PROGRAM [ARG...]", file=sys.stderr)
        return 2
    keeper = os.getpid()
    libc = ctypes.CDLL(None, use_errno=True)

    def tie() -> None:  # in the child, before it runs PROGRAM
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != keeper:  # the keeper died before the tie was made
            os._exit(1)

    child = subprocess.Popen(argv, preexec_fn=tie)

    def pass_on(signum, _frame) -> None:
        try:
            child.send_signal(signum)
        except ProcessLookupError:
            pass

    for signum in PASSED_ON:
        signal.signal(signum, pass_on)
    code = child.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
