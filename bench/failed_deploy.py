"""Failed deploys: how long a deploy of an app that answers its health check with 500 takes to
fail, and whether its error quotes the app's own error line.

For each runtime (python: a WSGI app that raises; php: an index.php that throws), each round
uploads a new broken version (a unique build, so a new archive is staged each time) and times
`PATCH /api/v1/services/{id}/environments/development/ {version}` until its operation ends; the
upload is not timed. The operation must fail, its error must hold the exception's message (from
the instance's own log: gunicorn's traceback, php-fpm's and nginx's error lines), and the kept
logs (`GET …/logs/?environment=development&failed=true`) must hold it too. Beside it, the time the
same deploy took before the fail-fast rule: the health timeout (CONPAAS_HEALTH_TIMEOUT, 60 s).
Target: every failure within 10 s.

Run: .venv/bin/python bench/failed_deploy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402
from benchlib import say  # noqa: E402

from tests.apps import zip_archive  # noqa: E402

MESSAGE = "no SECRET_KEY in the environment"
BROKEN = {
    "python": (
        "wsgi.py",
        f'def application(environ, start_response):\n    raise RuntimeError("{MESSAGE}")\n# {{build}}\n',
    ),
    "php": ("index.php", f"<?php throw new RuntimeException('{MESSAGE}'); // {{build}}\n"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="failed deploys timed per runtime")
    parser.add_argument("--target", type=float, default=10.0, help="seconds, the slowest failure")
    parser.add_argument("--time-limit", type=float, default=600.0, help="hard limit of the whole run, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the CONPAAS_HOME and node logs")
    args = parser.parse_args()
    return benchlib.run_benchmark(
        "failed deploys", "faildeploy", run, args, f"every deploy of an app answering 500 fails within {args.target} s"
    )


def run(env, args) -> bool:
    api, ok, times = env.api, True, {}
    for runtime, (entry, source) in BROKEN.items():
        service = api.create_service(f"fail{runtime}", runtime=runtime)
        sid = service["id"]
        times[runtime] = []
        for round_ in range(1, args.rounds + 1):
            archive = zip_archive({entry: source.replace("{build}", uuid.uuid4().hex)})
            version = api.upload(sid, archive, f"broken{round_}").json()
            started = time.monotonic()
            response = api.patch(f"/api/v1/services/{sid}/environments/development/", json={"version": version["id"]})
            operation = api.wait_operation(response.json(), timeout=120)
            took = time.monotonic() - started
            kept = api.get(f"/api/v1/services/{sid}/logs/?environment=development&failed=true").json()
            quoted = MESSAGE in (operation.get("error") or "")
            in_kept = any(MESSAGE in line["line"] for line in kept["lines"])
            times[runtime].append(took)
            say(
                f"{runtime} round {round_}: {operation['state']} after {took:.2f} s; error quotes the app's line: "
                f"{'yes' if quoted else 'NO'}; kept logs hold it: {'yes' if in_kept else 'NO'}"
            )
            if round_ == 1:
                say("  its error:\n    " + (operation.get("error") or "").replace("\n", "\n    "))
            ok = ok and operation["state"] == "failed" and quoted and in_kept and took <= args.target
    for runtime, found in times.items():
        say(
            f"{runtime}: median {statistics.median(found):.2f} s, max {max(found):.2f} s over {len(found)} "
            "failed deploys (before the fail-fast rule: the 60 s health timeout)"
        )
    return ok


if __name__ == "__main__":
    sys.exit(main())
