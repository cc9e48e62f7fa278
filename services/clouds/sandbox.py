"""Sandboxes: where a build runs (versions/builds.py), isolated like a node.

On an isolated local cloud a sandbox is a node of its own kind: a Unix user, a network namespace
on the nodes' bridge, cgroups, and a firewall that lets it reach the package proxy (forwarded
from the bridge's gateway) and nothing else. Without isolation it is a directory of the
platform's and the platform's own user, and reaches what the platform reaches (`./run up` says
so at start, as it does for nodes).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from services.clouds.isolation import Isolation, IsolationError, Slot


class SandboxError(Exception):
    """The sandbox could not be made, or a step in it could not run."""


class Sandbox:
    """A directory owned by the build, and a way to run programs in it. Closed, it leaves nothing."""

    def __init__(self, home: Path, index_url: str):
        self.home = home
        self.index_url = index_url  # the package proxy's index, as the sandbox reaches it

    def give(self, path: Path) -> None:
        """Make `path` (put into the sandbox by the platform) the build's own."""

    def run(self, argv: list[str], cwd: Path, env: dict, timeout: float, on_line: Callable[[str], None]) -> int:
        """Run `argv` to its end or `timeout` (then killed: exit -9), each line of its output to
        `on_line`; its exit code."""
        process = subprocess.Popen(
            self.argv(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        stopped = threading.Event()

        def stop() -> None:
            stopped.set()
            self.kill(process)

        watchdog = threading.Timer(timeout, stop)
        watchdog.start()
        try:
            for raw in process.stdout:
                on_line(raw.decode(errors="replace").rstrip("\n"))
            code = process.wait()
        finally:
            watchdog.cancel()
            process.stdout.close()
            if process.poll() is None:
                self.kill(process)
                process.wait()
        if stopped.is_set():
            on_line(f"stopped after {timeout:.0f} s")
        return code

    @staticmethod
    def kill(process: subprocess.Popen) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def argv(self, argv: list[str]) -> list[str]:
        return argv

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SharedSandbox(Sandbox):
    """Not isolated: a private directory of the platform's, run as the platform's user."""

    @classmethod
    def make(cls, parent: Path, name: str, proxy_url: str) -> "SharedSandbox":
        parent.mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)), proxy_url.rstrip("/") + "/index/")


class IsolatedSandbox(Sandbox):
    """A node-like slot of its own (isolation.py, kind "build"), released on close."""

    def __init__(self, isolation: Isolation, slot: Slot, index_url: str):
        super().__init__(isolation.home(slot), index_url)
        self.isolation, self.slot = isolation, slot

    @classmethod
    def make(cls, isolation: Isolation, name: str, proxy_url: str) -> "IsolatedSandbox":
        proxy = urlsplit(proxy_url)
        if not proxy.hostname or not proxy.port:
            raise SandboxError(f"the package proxy's URL {proxy_url!r} names no host and port")
        Path(isolation.installation).mkdir(parents=True, exist_ok=True)
        try:
            # Its "control plane" is the package proxy: the host forwards that port of the gateway.
            slot = isolation.allocate(name, name, (proxy.hostname, proxy.port), None, kind="build")
        except IsolationError as exc:
            raise SandboxError(f"could not make the build's sandbox: {exc}") from exc
        return cls(isolation, slot, f"http://{isolation.network.gateway}:{proxy.port}/index/")

    def give(self, path: Path) -> None:
        uid, gid = self.isolation.owner(self.slot)
        os.chown(path, uid, gid)
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)

    def argv(self, argv: list[str]) -> list[str]:
        return self.isolation.launch_argv(self.slot, argv, [])

    def close(self) -> None:
        self.isolation.release(self.slot.node)
