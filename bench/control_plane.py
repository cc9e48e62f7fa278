"""Control-plane pages at scale: the dashboard, the service list API and a service's page with
1,000 services.

Creates one user with `--services` services (default 1,000; each with production and development
environments, two code versions, and saved health verdicts on two services in three) in a
throwaway CONPAAS_HOME / SQLite database, with no nodes, then serves it with a real gunicorn
(`conpaas_site.wsgi`, as `manage.py up` runs it: `--web-workers` workers x 4 threads; no task
workers, which would try to reconcile the services) and times `--requests` sequential requests
(default 200, after 20 unmeasured) of each page on one keep-alive connection: the dashboard, its
htmx fragment (`/services/list/`), a name search, `GET /api/v1/services/` (every service, not
paginated), and one service's page. Prints p50/p95/max of each, and the server's CPU time per
request (steadier than latency on a shared machine). Target: p95 <= 50 ms each.

Run: .venv/bin/python bench/control_plane.py [--services 1000] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
import requests  # noqa: E402
from benchlib import ROOT, say  # noqa: E402

from conpaas_common.procs import free_port  # noqa: E402
from conpaas_common.waiting import wait_until  # noqa: E402

PASSWORD = "bench-secret-1"


def seed(count: int) -> dict:
    """The user, its token and `count` services, straight into the database (bulk inserts)."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from services import tokens
    from services.models import Service
    from versions.models import DEVELOPMENT, PRODUCTION, CodeVersion, Environment, new_preview_key

    user = get_user_model().objects.create_user("bench", password=PASSWORD)
    _token, token = tokens.issue(user)
    now = timezone.now()
    services = Service.objects.bulk_create(
        Service(owner=user, name=f"svc-{n:04d}", runtime="python", state="running") for n in range(count)
    )
    versions = CodeVersion.objects.bulk_create(
        CodeVersion(service=s, label=label, sha256=f"{s.pk:032x}{i:032x}", size=1000, kind="zip")
        for s in services
        for i, label in enumerate(("v1", "v2"))
    )
    by_service = {}
    for version in versions:
        by_service.setdefault(version.service_id, []).append(version)
    environments = []
    for n, service in enumerate(services):
        v1, v2 = by_service[service.pk]
        checked = n % 3 != 0  # a third never checked
        for name, version, key in ((PRODUCTION, v1, None), (DEVELOPMENT, v2, new_preview_key())):
            problems = ["instance x is DOWN (L7STS, HTTP 500)"] if (name == DEVELOPMENT and n % 5 == 0) else []
            environments.append(
                Environment(
                    service=service,
                    name=name,
                    version=version,
                    preview_key=key,
                    health_problems=problems if checked else None,
                    health_checked=now - timedelta(seconds=n % 40) if checked else None,
                    health_version=version if checked else None,
                )
            )
    Environment.objects.bulk_create(environments)
    return {"token": token, "service": services[len(services) // 2].pk}


def login(base: str) -> requests.Session:
    session = requests.Session()
    session.get(base + "/login/", timeout=30)
    token = session.cookies["conpaas_console_csrf"]
    response = session.post(
        base + "/login/",
        data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Referer": base + "/login/"},
        timeout=30,
    )
    if "conpaas_console_session" not in session.cookies:
        raise RuntimeError(f"could not sign in: {response.status_code}")
    return session


def measure(session: requests.Session, url: str, count: int, warmup: int, meter) -> tuple[list[float], int, float]:
    """Round trips of `count` requests (after `warmup` unmeasured), the body size, and the server's
    CPU time per request (its processes' user+system time over the measured requests)."""
    times, size = [], 0
    for n in range(warmup + count):
        if n == warmup:
            meter.start()
            began_all = time.monotonic()
        began = time.perf_counter()
        response = session.get(url, timeout=30)
        body = response.content
        spent = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}: {body[:300]!r}")
        if n >= warmup:
            times.append(spent)
            size = len(body)
    elapsed = time.monotonic() - began_all
    cpu = meter.stop()["server"] / 100 * elapsed / count
    return times, size, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per page")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per page first")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (manage.py up's default)")
    parser.add_argument("--target-p95", type=float, default=50.0, help="milliseconds")
    parser.add_argument("--time-limit", type=float, default=600.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME")
    args = parser.parse_args()

    import django

    say("== control plane at scale ==")
    benchlib.print_machine()
    say(f"machine: django={django.get_version()}")
    home = Path(tempfile.mkdtemp(prefix="conpaas-bench-control-plane-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CONPAAS_"))},
        "CONPAAS_HOME": str(home),
        "DJANGO_SETTINGS_MODULE": "conpaas_site.settings",
    }
    server, verdict = None, False
    log = open(home / "gunicorn.log", "ab")
    try:
        with benchlib.time_limit(args.time_limit):
            os.environ.update(env)
            django.setup()
            from django.core.management import call_command

            call_command("migrate", interactive=False, verbosity=0)
            began = time.monotonic()
            seeded = seed(args.services)
            say(f"setup: CONPAAS_HOME={home}; {args.services} services seeded in {time.monotonic() - began:.1f} s")

            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "conpaas_site.wsgi"),
                    *("--bind", f"127.0.0.1:{port}", "--workers", str(args.web_workers), "--threads", "4"),
                    *("--chdir", str(ROOT)),
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

            def answers() -> bool:
                if server.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with {server.returncode}; see {log.name}")
                try:
                    return requests.get(base + "/login/", timeout=5).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(answers, timeout=60, message="gunicorn to answer")
            say(
                f"server: real HTTP, gunicorn conpaas_site.wsgi, {args.web_workers} workers x 4 threads, "
                f"SQLite (WAL); client: one keep-alive connection, sequential; {args.requests} requests "
                f"per page after {args.warmup} unmeasured"
            )
            console = login(base)
            api = requests.Session()
            api.headers["Authorization"] = f"Token {seeded['token']}"
            pages = [
                ("dashboard page", console, "/"),
                ("dashboard fragment (htmx)", console, "/services/list/"),
                ("dashboard search", console, "/?q=svc-09"),
                ("service list API", api, "/api/v1/services/"),
                ("service page", console, f"/services/{seeded['service']}/"),
            ]
            verdict = True
            # The server's CPU per request is steadier than its latency on a shared machine.
            meter = benchlib.CpuMeter({"server": lambda pgid, command: pgid == server.pid})
            say(f"{'page':28} {'p50':>9} {'p95':>9} {'max':>9} {'CPU/req':>9} {'size':>9}  url")
            for name, session, path in pages:
                times, size, cpu = measure(session, base + path, args.requests, args.warmup, meter)
                p50, p95 = benchlib.percentile(times, 50), benchlib.percentile(times, 95)
                ok = p95 * 1000 <= args.target_p95
                verdict = verdict and ok
                say(
                    f"{name:28} {benchlib.ms(p50):>9} {benchlib.ms(p95):>9} {benchlib.ms(max(times)):>9} "
                    f"{benchlib.ms(cpu):>9} {size / 1024:>5.0f} KiB  {path}{'' if ok else '  <- over target'}"
                )
            say(f"load average after the run: {' '.join(open('/proc/loadavg').read().split()[:3])}")
            count = len(api.get(base + "/api/v1/services/", timeout=30).json())
            if count != args.services:
                raise RuntimeError(f"the service list API returned {count} services, not {args.services}")
    except Exception as exc:  # noqa: BLE001 - a benchmark reports, it does not crash
        say(f"error: {type(exc).__name__}: {exc}")
        verdict = False
    finally:
        if server is not None and server.poll() is None:
            server.terminate()  # the gunicorn this run started
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if args.keep or not verdict:
            say(f"setup: kept {home} (gunicorn.log)")
        else:
            shutil.rmtree(home, ignore_errors=True)
    target = f"p95 <= {args.target_p95:.0f} ms for each page with {args.services} services"
    say(f"{'PASS' if verdict else 'FAIL'}: control plane at scale (target: {target})")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
