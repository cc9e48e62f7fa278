"""Run the platform in the foreground: migrations, then the web server, the task workers, the
package proxy and (without an operator's S3 store) the platform's backup store, kept running by
workflows/supervisor.py."""

import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from conpaas_common.procs import free_port
from conpaas_common.weed import WeedMissing, checked_weed
from services import backup_store, object_storage, package_proxy, platform_store
from services.clouds import describe as describe_nodes
from services.operations import recover_interrupted
from versions.builds import forget_interrupted_builds
from workflows import first_account
from workflows.reconcile import reconcile_all
from workflows.supervisor import Supervisor


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
        store = self.prepare_backup_store()
        with Supervisor(self.stderr) as supervisor:
            if store:
                # First: it takes seconds to answer, and the first backups wait for it (backup_store.wait_for).
                log = platform_store.directory() / platform_store.LOG
                # None of the control plane's settings (its secret key, its database's password).
                store_env = {name: os.environ[name] for name in ("PATH", "LANG", "TZ") if name in os.environ}
                supervisor.start("backup store", store, store_env, grace=platform_store.STOP_GRACE, log=log)
            if not env.get("CONPAAS_PACKAGE_PROXY_URL"):
                # Builds reach the package indexes through it, and nothing else (services/package_proxy.py).
                proxy_port = free_port("127.0.0.1")
                env["CONPAAS_PACKAGE_PROXY_URL"] = f"http://127.0.0.1:{proxy_port}/index/"
                proxy_env = package_proxy.environment(env)
                supervisor.start("package proxy", package_proxy.command(proxy_port), proxy_env)
            gunicorn = [sys.executable, "-m", "gunicorn", "conpaas_site.wsgi", "--bind", bind]
            gunicorn += ["--workers", str(web_workers), "--threads", "4", "--graceful-timeout", "10"]
            # No control socket in the invoking user's home: nothing of ours lives outside CONPAAS_HOME.
            gunicorn += ["--access-logfile", "-", "--logger-class", "conpaas_site.access_log.AccessLog"]
            gunicorn += ["--chdir", str(settings.BASE_DIR), "--no-control-socket"]
            supervisor.start("web server", gunicorn, env)
            workers = supervisor.start(
                "task workers", [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"], env
            )
            self.stdout.write(f"ConPaaS is up at {env['CONPAAS_URL']}/ (home {settings.CONPAAS_HOME}); Ctrl-C stops it")
            self.stdout.write(describe_nodes())
            if code:
                self.stdout.write(
                    f"No account exists yet: open {env['CONPAAS_URL']}/ in a browser on this machine to make the "
                    f"first one, or from elsewhere with this one-time code: {code}"
                )
            supervisor.run(workers)
        self.stdout.write("ConPaaS stopped; local nodes keep serving ('manage.py down' stops them)")

    def prepare_backup_store(self) -> list[str] | None:
        """The command line of the platform's backup store when this installation uses it (no
        CONPAAS_BACKUP_S3_*, no CONPAAS_BACKUP_STORE=off), its configuration made on the first run."""
        if not platform_store.wanted():
            return None
        try:
            weed = checked_weed(object_storage.weed_path())
        except WeedMissing as exc:
            raise CommandError(f"the backup store cannot run: {exc} (or set CONPAAS_BACKUP_STORE=off)") from None
        config, made = platform_store.prepare()
        if made:
            backup_store.forget_grants()
        if used := platform_store.ports_in_use(config):
            raise CommandError(
                f"the backup store's port(s) {', '.join(map(str, used))} (kept in "
                f"{platform_store.directory() / platform_store.CONFIG}) are taken: by a store a killed "
                "`manage.py up` left running, or by another program; stop it and start again"
            )
        self.stdout.write(f"backups go to the platform's own store at {config.endpoint} ({platform_store.directory()})")
        return platform_store.command(config, weed)
