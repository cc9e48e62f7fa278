"""Run the platform in the foreground: migrations, then the web server and the task workers."""

import logging
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from conpaas_common.procs import free_port
from services import package_proxy
from services.clouds import describe as describe_nodes
from services.operations import expire_leases, recover_interrupted, resume_pending
from versions.builds import forget_interrupted_builds
from workflows import first_account
from workflows.reconcile import reconcile_all
from workflows.tasks import queue_heal_check, queue_health_refresh, queue_metrics_sample

log = logging.getLogger("conpaas.up")
# A part that dies more often than this in a minute is not going to run (a port taken, a broken
# install): everything stops, with the reason.
RESTARTS_PER_MINUTE = 5
# How often running operations' leases are checked, seconds.
LEASE_CHECK = 5


class Part:
    """One part of the control plane (the web server, the task workers) run as a child process in
    a process group of its own: when its leader dies, what it leaves behind (gunicorn's or
    django-q's own workers) is killed with the group, and the part is started again."""

    def __init__(self, name: str, argv: list[str], env: dict):
        self.name, self.argv, self.env = name, argv, env
        self.deaths: list[float] = []
        self.process = self.spawn()

    def spawn(self) -> subprocess.Popen:
        return subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, process_group=0)

    def died(self) -> bool:
        return self.process.poll() is not None

    def restart(self) -> None:
        self.kill_group()
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < 60] + [now]
        if len(self.deaths) > RESTARTS_PER_MINUTE:
            raise CommandError(f"the {self.name} died {len(self.deaths)} times within a minute; stopped everything")
        self.process = self.spawn()

    def kill_group(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # nothing of it is left

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Until `deadline` (time.monotonic()) to finish, then SIGKILL to what is left of it."""
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.kill_group()
        self.process.wait()


class Command(BaseCommand):
    help = "Apply migrations, then run the web server (gunicorn) and the task workers until SIGINT/SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT for the web server")
        parser.add_argument("--web-workers", type=int, default=2)

    def handle(self, *args, bind, web_workers, **options):
        host, _, port = bind.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--bind takes HOST:PORT, not {bind!r}")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        interrupted = recover_interrupted()
        # Builds the last stop interrupted: their sandboxes and half-written files.
        forget_interrupted_builds()
        if interrupted:
            self.stdout.write(f"{interrupted} operation(s) interrupted by the last stop were marked failed")
        # The data plane went on without us: re-read what the nodes run and converge to the database.
        reconcile_all()
        # While no user exists, the console offers to make the first account (workflows/first_account.py);
        # the code for doing so from elsewhere exists before the web server answers.
        code = first_account.issue_code()

        env = dict(os.environ)
        # Nodes download code versions from here; they reach this host on the address we bind.
        env.setdefault("CONPAAS_URL", f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}")
        allowed = env.get("CONPAAS_ALLOWED_HOSTS", ",".join(settings.ALLOWED_HOSTS)).split(",")
        if host not in ("0.0.0.0", "::", "") and host not in allowed:
            # Nodes fetch archives from the bound address: it must be an allowed host.
            env["CONPAAS_ALLOWED_HOSTS"] = ",".join([*allowed, host])
        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        parts = []
        try:
            if not env.get("CONPAAS_PACKAGE_PROXY_URL"):
                # Builds reach the package indexes through it, and nothing else (services/package_proxy.py).
                proxy_port = free_port("127.0.0.1")
                env["CONPAAS_PACKAGE_PROXY_URL"] = f"http://127.0.0.1:{proxy_port}/index/"
                proxy_env = package_proxy.environment(env)
                parts.append(Part("package proxy", package_proxy.command(proxy_port), proxy_env))
            gunicorn = [sys.executable, "-m", "gunicorn", "conpaas_site.wsgi", "--bind", bind]
            gunicorn += ["--workers", str(web_workers), "--threads", "4", "--graceful-timeout", "10"]
            # No control socket in the invoking user's home: nothing of ours lives outside CONPAAS_HOME.
            gunicorn += ["--access-logfile", "-", "--logger-class", "conpaas_site.access_log.AccessLog"]
            gunicorn += ["--chdir", str(settings.BASE_DIR), "--no-control-socket"]
            parts.append(Part("web server", gunicorn, env))
            workers = Part("task workers", [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"], env)
            parts.append(workers)
            self.stdout.write(f"ConPaaS is up at {env['CONPAAS_URL']}/ (home {settings.CONPAAS_HOME}); Ctrl-C stops it")
            self.stdout.write(describe_nodes())
            if code:
                self.stdout.write(
                    f"No account exists yet: open {env['CONPAAS_URL']}/ in a browser on this machine to make the "
                    f"first one, or from elsewhere with this one-time code: {code}"
                )
            # The timers: the health the console shows (a task every interval, run by whichever
            # worker is free; a pass that finds nothing due is one query), self-healing's checks of
            # the nodes likewise (workflows/healing.py; CONPAAS_HEAL_INTERVAL=0 turns it off), the
            # metrics (each pass samples, autoscales and expires the history), and the running
            # operations' leases (checked here, so that an operation whose workers all died ends).
            next_refresh = next_heal = next_sample = next_lease_check = time.monotonic()
            resume = False
            while not stopping:
                for part in parts:
                    if part.died():
                        self.stderr.write(f"the {part.name} exited (code {part.process.returncode}); starting again")
                        part.restart()
                        # The tasks the dead workers had taken went with them.
                        resume = resume or part is workers
                now = time.monotonic()
                try:
                    if resume:
                        resume_pending()
                        resume = False
                    if now >= next_lease_check:
                        next_lease_check = now + LEASE_CHECK
                        expire_leases()
                    if now >= next_refresh:
                        next_refresh = now + max(1, settings.CONPAAS_HEALTH_REFRESH)
                        queue_health_refresh()
                    if settings.CONPAAS_HEAL_INTERVAL > 0 and now >= next_heal:
                        next_heal = now + settings.CONPAAS_HEAL_INTERVAL
                        queue_heal_check()
                    if now >= next_sample:
                        next_sample = now + max(1, settings.CONPAAS_METRICS_INTERVAL)
                        queue_metrics_sample()
                except DatabaseError:
                    log.exception("the database failed a timer's query; trying again at the next tick")
                time.sleep(0.2)
        finally:
            for part in parts:
                part.terminate()
            deadline = time.monotonic() + 30
            for part in parts:
                part.wait(deadline)
        self.stdout.write("ConPaaS stopped; local nodes keep serving ('manage.py down' stops them)")
