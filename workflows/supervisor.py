"""What `manage.py up` runs in the foreground until SIGINT or SIGTERM: the control plane's parts
(the web server, the task workers, the package proxy, the platform's backup store) as child
processes, each started again when it dies, and the platform's timers."""

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError

from services.operations import expire_leases, resume_pending
from workflows.tasks import queue_backup_check, queue_heal_check, queue_health_refresh, queue_metrics_sample

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

    def __init__(self, name: str, argv: list[str], env: dict, grace: float | None = None, log: Path | None = None):
        self.name, self.argv, self.env = name, argv, env
        # `grace`: seconds it gets to stop on SIGTERM, when less than the others; `log`: a file
        # its output goes to instead of ours.
        self.grace, self.log = grace, log
        self.deaths: list[float] = []
        self.stopped: float | None = None  # when SIGTERM was sent
        self.process = self.spawn()

    def spawn(self) -> subprocess.Popen:
        if self.log is None:
            return subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, process_group=0)
        with open(self.log, "ab") as output:
            return subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=output, process_group=0
            )

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
        self.stopped = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Until `deadline` (time.monotonic()) to finish, then SIGKILL to what is left of it."""
        if self.grace is not None and self.stopped is not None:
            deadline = min(deadline, self.stopped + self.grace)
        try:
            self.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.kill_group()
        self.process.wait()


class Supervisor:
    """`with Supervisor(stderr) as supervisor:` start the parts, then `run`. From entering, SIGINT
    and SIGTERM ask it to stop; on leaving, every part is stopped (SIGTERM, 30 s, then SIGKILL)."""

    def __init__(self, stderr):
        self.stderr = stderr  # where a part's death is said
        self.parts: list[Part] = []
        self.stopping = False

    def __enter__(self) -> "Supervisor":
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)
        return self

    def stop(self, signum, frame) -> None:
        self.stopping = True

    def start(self, name: str, argv: list[str], env: dict, grace: float | None = None, log: Path | None = None) -> Part:
        part = Part(name, argv, env, grace, log)
        self.parts.append(part)
        return part

    def run(self, workers: Part) -> None:
        """Until asked to stop: start again each part that died, and run the timers. The timers:
        the health the console shows (a task every interval, run by whichever worker is free; a
        pass that finds nothing due is one query), self-healing's checks of the nodes likewise
        (workflows/healing.py; CONPAAS_HEAL_INTERVAL=0 turns it off), the metrics (each pass
        samples, autoscales and expires the history), the backups (those due by their policies,
        workflows/backups.py), and the running operations' leases (checked
        here, so that an operation whose workers all died ends)."""
        next_refresh = next_heal = next_sample = next_lease_check = next_backups = time.monotonic()
        resume = False
        while not self.stopping:
            for part in self.parts:
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
                if settings.CONPAAS_BACKUP_CHECK_INTERVAL > 0 and now >= next_backups:
                    next_backups = now + settings.CONPAAS_BACKUP_CHECK_INTERVAL
                    queue_backup_check()
                if now >= next_sample:
                    next_sample = now + max(1, settings.CONPAAS_METRICS_INTERVAL)
                    queue_metrics_sample()
            except DatabaseError:
                log.exception("the database failed a timer's query; trying again at the next tick")
            time.sleep(0.2)

    def __exit__(self, *exc_info) -> None:
        for part in self.parts:
            part.terminate()
        deadline = time.monotonic() + 30
        for part in self.parts:
            part.wait(deadline)
