"""Run the platform in the foreground: migrations, then the web server and the task workers."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from services.clouds import describe as describe_nodes
from services.operations import recover_interrupted
from workflows import first_account
from workflows.reconcile import reconcile_all
from workflows.tasks import queue_health_refresh, queue_metrics_sample


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
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "conpaas_site.wsgi",
                    "--bind",
                    bind,
                    "--workers",
                    str(web_workers),
                    "--threads",
                    "4",
                    "--graceful-timeout",
                    "10",
                    "--access-logfile",
                    "-",
                    "--chdir",
                    str(settings.BASE_DIR),
                    # No control socket in the invoking user's home: nothing of ours lives outside CONPAAS_HOME.
                    "--no-control-socket",
                ],
                env=env,
            ),
            subprocess.Popen([*manage, "qcluster"], env=env),
        ]
        self.stdout.write(f"ConPaaS is up at {env['CONPAAS_URL']}/ (home {settings.CONPAAS_HOME}); Ctrl-C stops it")
        self.stdout.write(describe_nodes())
        if code:
            self.stdout.write(
                f"No account exists yet: open {env['CONPAAS_URL']}/ in a browser on this machine to make the first "
                f"one, or from elsewhere with this one-time code: {code}"
            )

        stopping = False

        def stop(signum, frame):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        # The timer that keeps the health the console shows fresh: a task every interval, run by
        # whichever worker is free (a pass that finds nothing due is one query).
        # The metrics timer likewise: each pass samples, autoscales and expires the history.
        next_refresh = next_sample = time.monotonic()
        while not stopping and all(child.poll() is None for child in children):
            if time.monotonic() >= next_refresh:
                queue_health_refresh()
                next_refresh = time.monotonic() + max(1, settings.CONPAAS_HEALTH_REFRESH)
            if time.monotonic() >= next_sample:
                queue_metrics_sample()
                next_sample = time.monotonic() + max(1, settings.CONPAAS_METRICS_INTERVAL)
            time.sleep(0.2)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if not stopping:
            raise CommandError("a part of the control plane exited on its own; stopped the rest")
        self.stdout.write("ConPaaS stopped; local nodes keep serving ('manage.py down' stops them)")
