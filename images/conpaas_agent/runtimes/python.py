"""python: a WSGI application run by gunicorn, with the version's requirements in a virtualenv."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig

from ..archives import valid_entry_point
from .base import InstanceError, Recipe, Run, build_environ, private_dir, tail

_control_socket: dict[str, bool] = {}


def agent_site_packages() -> list[str]:
    """Where the agent's interpreter finds gunicorn; appended to a version's virtualenv."""
    paths = []
    for path in [sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib"), *sys.path]:
        if path and os.path.isdir(path) and path.rstrip("/").endswith(("site-packages", "dist-packages")):
            if path not in paths:
                paths.append(path)
    return paths


def gunicorn_has_control_socket(python: str, env: dict[str, str]) -> bool:
    if python not in _control_socket:
        try:
            help_text = subprocess.run(
                [python, "-m", "gunicorn", "--help"], capture_output=True, text=True, env=env, timeout=60
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            help_text = ""
        _control_socket[python] = "--no-control-socket" in help_text
    return _control_socket[python]


# Gunicorn sync workers: each serves one request at a time.
WORKERS = 2


class Python(Recipe):
    name = "python"
    concurrency = WORKERS
    unix_socket = True
    fields = frozenset({"entry_point"})
    stop_signals = (signal.SIGTERM,)
    # gunicorn can fork a worker just after its master took SIGTERM; that worker never hears of
    # it and the master waits out its graceful timeout. Telling the workers directly ends it.
    resignal_children = True
    logs = ("instance.log", "access.log")

    def validate(self, body: dict) -> dict:
        # The control plane found the entry point when it validated the archive; the agent never
        # guesses one, so it runs nothing the archive rulebook refused.
        entry_point = body.get("entry_point")
        if not isinstance(entry_point, str) or not valid_entry_point(entry_point):
            raise InstanceError("entry_point is required: the WSGI application as module:callable", 400)
        return {"entry_point": entry_point}

    def build(self, version_dir: str, app: str, logfile: str, nice: int) -> dict:
        """Without requirements.txt the instance runs on the agent's own interpreter."""
        if not os.path.isfile(os.path.join(app, "requirements.txt")):
            return {"python": sys.executable, "venv": None}
        venv = os.path.join(version_dir, "venv")
        python = os.path.join(venv, "bin", "python")
        ready = os.path.join(venv, ".conpaas-ready")
        if not os.path.exists(ready):
            shutil.rmtree(venv, ignore_errors=True)
            # The build's HOME (pip's cache) is the version's own, and goes with the build.
            build_home = private_dir(os.path.join(version_dir, "build-home"))
            try:
                _build_virtualenv(venv, python, app, logfile, build_environ(build_home, venv), nice)
            finally:
                shutil.rmtree(build_home, ignore_errors=True)
            open(ready, "w").close()
        return {"python": python, "venv": venv}

    def start(self, run: Run) -> None:
        python = run.build["python"]
        argv = [
            python,
            "-m",
            "gunicorn",
            "--bind",
            f"{run.host}:{run.port}",
            *(["--bind", f"unix:{run.socket}"] if run.socket else []),
            "--workers",
            str(WORKERS),
            "--graceful-timeout",
            "20",
            "--access-logfile",
            run.path("access.log"),
            "--chdir",
            run.app,
        ]
        if gunicorn_has_control_socket(python, run.env):
            # Newer gunicorn opens ~/.gunicorn/gunicorn.ctl, one path for every instance.
            argv.append("--no-control-socket")
        argv.append(run.spec["entry_point"])
        run.spawn(argv, cwd=run.app)

    def marker(self, run: Run) -> str:
        return f"{run.host}:{run.port}"


def _build_virtualenv(venv: str, python: str, app: str, logfile: str, env: dict[str, str], nice: int) -> None:
    with open(logfile, "ab") as out:
        out.write(b"--- creating the virtualenv and installing requirements.txt\n")
        out.flush()
        result = subprocess.run(
            [sys.executable, "-m", "venv", venv], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=app, timeout=600
        )
        if result.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            raise InstanceError(f"creating the virtualenv failed: {tail(logfile)}")
        # Append the agent's site-packages (gunicorn) after the venv's own: the version's
        # requirements win over what the agent has.
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        ).stdout.strip()
        with open(os.path.join(purelib, "zz_conpaas_agent.pth"), "w") as fh:
            fh.write("".join(f"{path}\n" for path in agent_site_packages()))
        out.flush()
        result = subprocess.run(
            ["nice", "-n", str(nice), python, "-m", "pip", "install", "-r", "requirements.txt"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=app,
            timeout=1800,
        )
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise InstanceError(f"installing requirements.txt failed: {tail(logfile)}")
