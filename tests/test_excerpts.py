"""What an error quotes of a log (conpaas_common.excerpts): the program's own error stays in the
last lines, whatever follows it. Used by the agent (an instance that exited at start) and the
control plane (a failed deploy's logs)."""

from conpaas_agent.runtimes.base import tail, why_it_failed
from conpaas_common.excerpts import excerpt

# A real gunicorn 20.1 log (Python 3.11, 2 workers) of an app whose import raises: both workers
# fail to boot, and the second's death reaches the master while it halts, which then prints its
# own chained traceback of HaltServer after the workers' RuntimeError.
GUNICORN_HALT = """\
[2026-12-07 18:03:50 +0000] [9569] [INFO] Starting gunicorn 20.1.0
[2026-12-07 18:03:50 +0000] [9569] [INFO] Listening at: http://127.0.0.1:37563 (9569)
[2026-12-07 18:03:50 +0000] [9569] [INFO] Using worker: sync
[2026-12-07 18:03:50 +0000] [9588] [INFO] Booting worker with pid: 9588
[2026-12-07 18:03:51 +0000] [9588] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 589, in spawn_worker
    worker.init_process()
  File "/usr/lib/python3/dist-packages/gunicorn/workers/base.py", line 134, in init_process
    self.load_wsgi()
  File "/usr/lib/python3/dist-packages/gunicorn/workers/base.py", line 146, in load_wsgi
    self.wsgi = self.app.wsgi()
                ^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/base.py", line 67, in wsgi
    self.callable = self.load()
                    ^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/wsgiapp.py", line 58, in load
    return self.load_wsgiapp()
           ^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/wsgiapp.py", line 48, in load_wsgiapp
    return util.import_app(self.app_uri)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/util.py", line 384, in import_app
    mod = importlib.import_module(module)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "<frozen importlib._bootstrap>", line 1206, in _gcd_import
  File "<frozen importlib._bootstrap>", line 1178, in _find_and_load
  File "<frozen importlib._bootstrap>", line 1149, in _find_and_load_unlocked
  File "<frozen importlib._bootstrap>", line 690, in _load_unlocked
  File "<frozen importlib._bootstrap_external>", line 940, in exec_module
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/srv/app/wsgi.py", line 3, in <module>
    raise RuntimeError("no config")
RuntimeError: no config
[2026-12-07 18:03:51 +0000] [9588] [INFO] Worker exiting (pid: 9588)
[2026-12-07 18:03:51 +0000] [9590] [INFO] Booting worker with pid: 9590
[2026-12-07 18:03:52 +0000] [9590] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 589, in spawn_worker
    worker.init_process()
  File "/usr/lib/python3/dist-packages/gunicorn/workers/base.py", line 134, in init_process
    self.load_wsgi()
  File "/usr/lib/python3/dist-packages/gunicorn/workers/base.py", line 146, in load_wsgi
    self.wsgi = self.app.wsgi()
                ^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/base.py", line 67, in wsgi
    self.callable = self.load()
                    ^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/wsgiapp.py", line 58, in load
    return self.load_wsgiapp()
           ^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/app/wsgiapp.py", line 48, in load_wsgiapp
    return util.import_app(self.app_uri)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/util.py", line 384, in import_app
    mod = importlib.import_module(module)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "<frozen importlib._bootstrap>", line 1206, in _gcd_import
  File "<frozen importlib._bootstrap>", line 1178, in _find_and_load
  File "<frozen importlib._bootstrap>", line 1149, in _find_and_load_unlocked
  File "<frozen importlib._bootstrap>", line 690, in _load_unlocked
  File "<frozen importlib._bootstrap_external>", line 940, in exec_module
  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed
  File "/srv/app/wsgi.py", line 3, in <module>
    raise RuntimeError("no config")
RuntimeError: no config
[2026-12-07 18:03:52 +0000] [9590] [INFO] Worker exiting (pid: 9590)
Traceback (most recent call last):
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 209, in run
    self.sleep()
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 357, in sleep
    ready = select.select([self.PIPE[0]], [], [], 1.0)
            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 242, in handle_chld
    self.reap_workers()
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 525, in reap_workers
    raise HaltServer(reason, self.WORKER_BOOT_ERROR)
gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "<frozen runpy>", line 88, in _run_code
  File "/usr/lib/python3/dist-packages/gunicorn/__main__.py", line 7, in <module>
    run()
  File "/usr/lib/python3/dist-packages/gunicorn/app/wsgiapp.py", line 67, in run
    WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").run()
  File "/usr/lib/python3/dist-packages/gunicorn/app/base.py", line 231, in run
    super().run()
  File "/usr/lib/python3/dist-packages/gunicorn/app/base.py", line 72, in run
    Arbiter(self).run()
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 229, in run
    self.halt(reason=inst.reason, exit_status=inst.exit_status)
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 342, in halt
    self.stop()
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 393, in stop
    time.sleep(0.1)
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 242, in handle_chld
    self.reap_workers()
  File "/usr/lib/python3/dist-packages/gunicorn/arbiter.py", line 525, in reap_workers
    raise HaltServer(reason, self.WORKER_BOOT_ERROR)
gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>
"""

JAVA = [
    "SEVERE: Servlet.service() for servlet [app] threw exception",
    "java.lang.IllegalStateException: no DATABASE_URL",
    # Frames that differ by more than their numbers (those alone would be repeats).
    *[f"\tat org.example.App.step{chr(97 + n % 26)}{chr(97 + n // 26)}(App.java:{n})" for n in range(40)],
    "Caused by: java.net.ConnectException: refused",
    "\tat org.example.Db.open(Db.java:9)",
]


def test_a_python_error_stays_in_the_excerpt_when_gunicorns_master_traceback_follows(tmp_path):
    log = tmp_path / "instance.log"
    log.write_text(GUNICORN_HALT)
    raw = tail(str(log)).splitlines()

    quoted = why_it_failed(str(log)).splitlines()

    # As it was: the app's error 38 lines from the end of 40, pushed out by a few more lines.
    assert len(raw) - raw.index("RuntimeError: no config") >= 35
    error = quoted.index("RuntimeError: no config")
    assert len(quoted) - error < 20, "well within the last lines"
    # The innermost frames, the app's, with their source lines; the others counted.
    assert quoted[error - 5 : error] == [
        "  … 12 more frames",
        '  File "<frozen importlib._bootstrap_external>", line 940, in exec_module',
        '  File "<frozen importlib._bootstrap>", line 241, in _call_with_frames_removed',
        '  File "/srv/app/wsgi.py", line 3, in <module>',
        '    raise RuntimeError("no config")',
    ]
    assert quoted[-1] == "gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>"
    assert not [line for line in quoted if line.strip() and set(line.strip()) <= {"^", "~"}], "no column markers"
    assert sum("Exception in worker process" in line for line in quoted) == 1, "the second worker's, once"


def test_a_java_exception_keeps_its_message_its_innermost_frames_and_its_cause():
    assert excerpt(JAVA, 12) == [
        "SEVERE: Servlet.service() for servlet [app] threw exception",
        "java.lang.IllegalStateException: no DATABASE_URL",
        "\tat org.example.App.stepaa(App.java:0)",
        "\tat org.example.App.stepba(App.java:1)",
        "\tat org.example.App.stepca(App.java:2)",
        "\t… 37 more frames",
        "Caused by: java.net.ConnectException: refused",
        "\tat org.example.Db.open(Db.java:9)",
    ]


def test_a_line_repeated_with_other_numbers_only_is_quoted_once_where_it_last_was():
    lines = ["[12:00:01] health check failed (pid 7)", "started", "[12:00:06] health check failed (pid 8)"]

    assert excerpt(lines, 12) == ["started", "[12:00:06] health check failed (pid 8)"]


def test_short_runs_of_frames_are_kept_whole():
    lines = [
        "Traceback (most recent call last):",
        '  File "/srv/app/wsgi.py", line 3, in <module>',
        "    boom()",
        "NameError: name 'boom' is not defined",
    ]

    assert excerpt(lines, 12) == lines
