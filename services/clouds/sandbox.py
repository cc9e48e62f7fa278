"""Sandboxes: where a build runs (versions/builds.py), isolated like a node.

On an isolated local cloud a sandbox is a node of its own kind: a Unix user, a network namespace
on the nodes' bridge, cgroups, and a firewall that lets it reach the package proxy (forwarded
from the bridge's gateway) and nothing else. Without isolation it is a directory of the
platform's and the platform's own user, and reaches what the platform reaches (`./run up` says
so at start, as it does for nodes).
"""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from services.clouds.host_commands import IsolationError
from services.clouds.isolation import Isolation
from services.clouds.slots import Slot

# A line of a build's output longer than this is cut (an installer printing without newlines).
MAX_LINE = 4096


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
        """Run `argv` to its end or `timeout`, each line of its output to `on_line`; its exit
        code (-9 when it was stopped). When it ends, whatever it left running in the sandbox is
        stopped too, so nothing goes on writing there or holds its output open."""
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
        timed_out = threading.Event()

        def watch() -> None:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out.set()
            self.stop(process)  # closes the output of what it left behind: the reading below ends

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            while line := process.stdout.readline(MAX_LINE):
                on_line(line.decode(errors="replace").rstrip("\n"))
        finally:
            process.stdout.close()
            watcher.join()
        if timed_out.is_set():
            on_line(f"stopped after {timeout:.0f} s")
            return -9
        return process.returncode

    def stop(self, process: subprocess.Popen) -> None:
        """Stop `process` and what it started (its session: not isolated, a daemon escapes)."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def argv(self, argv: list[str]) -> list[str]:
        return argv

    def close(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def index_url_in_sandbox(proxy_url: str, host: str) -> str:
    """The proxy's index URL with `host` for its host (the gateway, for an isolated sandbox)."""
    parts = urlsplit(proxy_url)
    return parts._replace(netloc=f"{host}:{parts.port}").geturl()


class SharedSandbox(Sandbox):
    """Not isolated: a private directory of the platform's, run as the platform's user."""

    @classmethod
    def make(cls, parent: Path, name: str, proxy_url: str) -> "SharedSandbox":
        parent.mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)), proxy_url)


class IsolatedSandbox(Sandbox):
    """A node-like slot of its own (slots.py, kind "build"; its firewall: network.py), released on close."""

    def __init__(self, isolation: Isolation, slot: Slot, index_url: str):
        super().__init__(isolation.home(slot), index_url)
        self.isolation, self.slot = isolation, slot

    @classmethod
    def make(cls, isolation: Isolation, name: str, proxy_url: str) -> "IsolatedSandbox":
        proxy = urlsplit(proxy_url)
        if proxy.hostname not in ("127.0.0.1", "localhost") or not proxy.port:
            raise SandboxError(
                f"the package proxy {proxy_url} must listen on 127.0.0.1 with a port: isolated builds "
                "reach it through the nodes' gateway, which forwards only to this machine"
            )
        Path(isolation.installation).mkdir(parents=True, exist_ok=True)
        name = f"{name}-{secrets.token_hex(3)}"  # each attempt its own, whatever a crash left
        try:
            # Its "control plane" is the package proxy: the host forwards that port of the gateway.
            slot = isolation.allocate(name, name, ("127.0.0.1", proxy.port), None, kind="build")
        except (IsolationError, OSError) as exc:
            raise SandboxError(f"could not make the build's sandbox: {exc}") from exc
        return cls(isolation, slot, index_url_in_sandbox(proxy_url, isolation.network.gateway))

    def give(self, path: Path) -> None:
        uid, gid = self.isolation.owner(self.slot)
        os.chown(path, uid, gid)
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)

    def argv(self, argv: list[str]) -> list[str]:
        return self.isolation.launch_argv(self.slot, argv, [])

    def stop(self, process: subprocess.Popen) -> None:
        """Every process of the sandbox (its cgroups, its user): a daemon cannot escape."""
        self.isolation.stop_processes(self.slot, timeout=0)
        process.wait()

    def close(self) -> None:
        self.isolation.release(self.slot.node)
