"""`manage.py up` outlives its parts: task workers or web server killed with SIGKILL are started
again, and an operation whose worker died is failed once its lease runs out, its service unlocked.
Every part, the platform's backup store too, ends on SIGTERM; the store's data stays."""

import json
import os
import signal
import threading
import time

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import label_app, zip_archive
from tests.harness import descendants, running_control_plane

pytestmark = pytest.mark.integration

# A short lease (30 s by default): what is proven is that it runs out, not how long it is.
LEASE = 10

NEVER_HEALTHY_APP = """\
def application(environ, start_response):
    start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
    return [b"not yet\\n"]
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """A control plane of its own: these tests kill its processes."""
    home = tmp_path_factory.mktemp("dead-workers")
    with running_control_plane(home, CONPAAS_OPERATION_LEASE=str(LEASE), CONPAAS_BACKUP_STORE="on") as plane:
        yield plane


class Watch(threading.Thread):
    """Asks the web server every quarter of a second until stopped; keeps what went wrong."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.answers, self.failures = url, 0, []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.25):
            try:
                status = requests.get(self.url + "/admin/login/", timeout=5).status_code
                self.answers += 1
                if status != 200:
                    self.failures.append(status)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.join()


def kill_tree(pid: int | None) -> list[int]:
    assert pid, "manage.py up runs that part"
    pids = [pid, *descendants(pid)]
    for each in pids:
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


# Through the workers: a lease that runs out with its workers, and new workers taking the next deploy.
@pytest.mark.broker
def test_it_fails_the_operation_of_killed_workers_when_their_lease_runs_out_and_deploys_again(plane):
    api = plane.client("erin")
    service = api.create_service("lease")
    sid = service["id"]
    good = api.upload(sid, label_app("lease"), "good").json()
    slow = api.upload(sid, zip_archive({"wsgi.py": NEVER_HEALTHY_APP}), "slow").json()
    operation = api.patch(f"/api/v1/services/{sid}/environments/production/", json={"version": slow["id"]}).json()
    wait_until(
        lambda: "health check" in api.get(f"/api/v1/operations/{operation['id']}/").json()["progress"],
        timeout=60,
        message="the deploy to wait for the health check",
    )

    with Watch(plane.url) as watch:
        killed = kill_tree(plane.part("qcluster"))
        killed_at = time.monotonic()
        ended = api.wait_operation(operation, timeout=90)
        took = time.monotonic() - killed_at

    assert len(killed) >= 3, "the cluster, its sentinel and its workers"
    assert ended["state"] == "failed"
    assert ended["error"].startswith("interrupted by the loss of its worker"), ended["error"]
    assert "while waiting for slow to pass its health check" in ended["error"]
    assert f"no sign of life for {LEASE} s" in ended["error"]
    assert took < LEASE + 5 + 10, "the lease, the 5 s between lease checks, and slack for a busy machine"
    events = api.get(f"/api/v1/services/{sid}/events/").json()
    assert {"operation": operation["id"], "outcome": "failed", "message": ended["error"]} in [
        {key: event[key] for key in ("operation", "outcome", "message")} for event in events
    ]
    assert watch.failures == [] and watch.answers > 10, "the web server answered all along"
    assert plane.process.poll() is None
    assert plane.part("qcluster") not in killed, "new task workers"
    assert api.deploy(sid, "production", good["id"])["state"] == "succeeded"
    assert requests.get(service["url"], timeout=10).text == "good\n"


def test_it_starts_a_killed_web_server_again(plane):
    workers = plane.part("qcluster")
    killed = kill_tree(plane.part("gunicorn"))

    wait_until(lambda: plane.part("gunicorn") not in (None, *killed), timeout=30, message="a new web server")

    def answers():
        try:
            return requests.get(plane.url + "/admin/login/", timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(answers, timeout=30, message="the web server to answer again")
    assert plane.part("qcluster") == workers, "the task workers were left alone"
    assert plane.process.poll() is None


def test_it_stops_every_part_on_sigterm(plane):
    store_home = plane.home / "backup-store"
    config = json.loads((store_home / "store.json").read_text())
    store_url = f"http://127.0.0.1:{config['ports']['s3']}/"
    # The backup store answers (refusing a request without keys) with the identities of its 0600 file.
    wait_until(lambda: answer(store_url) == 403, timeout=30, message="the backup store to answer")
    started = descendants(plane.process.pid)
    store = plane.part(f"-s3.config={store_home / 's3.json'}")
    assert plane.part("gunicorn") in started and plane.part("qcluster") in started and store in started

    plane.stop()  # SIGTERM

    assert plane.process.returncode == 0
    assert not [pid for pid in started if os.path.exists(f"/proc/{pid}")], "every process of the parts ended"
    plane.manage("down")
    assert json.loads((store_home / "store.json").read_text()) == config, "kept: nodes archive to its ports"
    assert any((store_home / "data").iterdir()), "its data is kept"


def answer(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.ConnectionError:
        return None
