"""python: a WSGI application run by gunicorn, with the version's requirements in a virtualenv."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig

from conpaas_common.archives import valid_entry_point

from ..platform_requests import GUNICORN_LOGGER
from .base import InstanceError, Recipe, Run

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
# gunicorn's default format with the client's address (the router's X-Forwarded-For) for the peer's.
ACCESS_LOG_FORMAT = '%({x-forwarded-for}i)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


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

    def build(self, version_dir: str, app: str, logfile: str, nice: int, built: str | None = None) -> dict:
        """Without requirements.txt the instance runs on the agent's own interpreter. With it, on
        a virtualenv (no pip: made in a tenth of a second) whose packages are the version's build,
        made once by the control plane (`pip install --target`) and unpacked here as it is."""
        if not os.path.isfile(os.path.join(app, "requirements.txt")):
            return {"python": sys.executable, "venv": None}
        if built is None:
            raise InstanceError("the version has a requirements.txt but the control plane sent no build of it", 400)
        # One virtualenv per build: a version staged with another build (made again) gets a new one.
        venv = os.path.join(version_dir, os.path.basename(built).replace("build-", "venv-", 1))
        python = os.path.join(venv, "bin", "python")
        ready = os.path.join(venv, ".conpaas-ready")
        if not os.path.exists(ready):
            shutil.rmtree(venv, ignore_errors=True)
            _make_virtualenv(venv, python, built, logfile)
            open(ready, "w").close()
        return {"python": python, "venv": venv}

    def start(self, run: Run) -> None:
        python = run.build["python"]
        logger_folder = run.path("gunicorn")
        os.makedirs(logger_folder, exist_ok=True)
        with open(os.path.join(logger_folder, "conpaas_access_log.py"), "w") as fh:
            fh.write(GUNICORN_LOGGER)
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
            # wsgi.url_scheme from the router's X-Forwarded-Proto (a unix socket's peer is always
            # believed). REMOTE_ADDR stays the router's, as gunicorn has it: the client's address is
            # X-Forwarded-For, which the router sets whole, and the access log shows it.
            "--forwarded-allow-ips",
            ",".join(run.trusted_proxies()),
            "--access-logformat",
            ACCESS_LOG_FORMAT,
            # Without the platform's own requests: a logger class the agent writes, alone in its folder.
            "--pythonpath",
            logger_folder,
            "--logger-class",
            "conpaas_access_log.AccessLog",
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


def _make_virtualenv(venv: str, python: str, site: str, logfile: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", venv], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        raise InstanceError(f"creating the virtualenv failed: {result.stderr.strip()[-2000:]}")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    # The build's packages as a site directory (their own .pth files count), then the agent's
    # site-packages (gunicorn): .pth files are read in name order, so the version's requirements
    # win over what the agent has.
    with open(os.path.join(purelib, "conpaas_build.pth"), "w") as fh:
        fh.write(f"import site; site.addsitedir({site!r})\n")
    with open(os.path.join(purelib, "zz_conpaas_agent.pth"), "w") as fh:
        fh.write("".join(f"{path}\n" for path in agent_site_packages()))
    _install_scripts(os.path.join(site, "bin"), os.path.join(venv, "bin"), python)
    with open(logfile, "ab") as out:
        out.write(f"--- the version's build is installed ({site})\n".encode())


def _install_scripts(source: str, bin_dir: str, python: str) -> None:
    """The build's console scripts (`pip install --target` leaves them in its bin/, written for
    the build's interpreter) in the virtualenv's bin/, which is on the instance's PATH, run by
    its python: a release command such as `alembic upgrade head` finds them and their packages."""
    try:
        names = sorted(os.listdir(source))
    except OSError:
        return
    for name in names:
        path = os.path.join(source, name)
        target = os.path.join(bin_dir, name)
        if not os.path.isfile(path) or os.path.islink(path) or os.path.lexists(target):
            continue
        with open(path, "rb") as fh:
            content = fh.read()
        if content.startswith(b"#!") and b"python" in content.split(b"\n", 1)[0]:
            content = f"#!{python}".encode() + content[content.find(b"\n") :]
        with open(target, "wb") as fh:
            fh.write(content)
        os.chmod(target, 0o755)
