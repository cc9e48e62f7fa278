"""Scaling out under overload, end to end: real control plane, real nodes, an open-loop load."""

import time

import pytest

from conpaas_agent.router.config import BUSY_MESSAGE, QUEUE_TIMEOUT
from conpaas_agent.runtimes.python import WORKERS
from conpaas_common.waiting import wait_until
from tests.apps import waiting_app
from tests.load import OpenLoop, tally

pytestmark = pytest.mark.integration

REQUEST_SECONDS = 0.05  # each request waits 50 ms, as if on a database


@pytest.fixture
def api(control_plane):
    return control_plane.client("olga")


@pytest.fixture
def service(api):
    service = api.create_service("busy")
    yield service
    api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


# A rate it measures (what the new nodes serve) on 2 cores: one at a time, not beside another
# worker's test.
@pytest.mark.serial
def test_scaling_out_at_four_times_one_nodes_capacity_succeeds(api, service):
    sid = service["id"]
    version = api.upload(sid, waiting_app(REQUEST_SECONDS), "v1").json()
    assert api.deploy(sid, "production", version["id"])["state"] == "succeeded"
    capacity = WORKERS / REQUEST_SECONDS  # one node: 40 requests a second
    rate = 3.75 * capacity  # 150 a second, as in the report of the failure

    def queue_timeouts():
        return api.get(f"/api/v1/services/{sid}/metrics/?window=600").json()["environments"]["production"][
            "queue_timeouts"
        ]

    began = time.monotonic()
    load = OpenLoop(service["url"], rate, timeout=QUEUE_TIMEOUT + 10).start()
    try:
        # Overloaded long enough that requests time out in the router's queue.
        wait_until(queue_timeouts, timeout=QUEUE_TIMEOUT + 20, message="the first queue timeouts")
        asked = time.monotonic()
        response = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 4})
        assert response.status_code == 202, response.text
        operation = api.wait_operation(response.json(), timeout=60)
        scaled = time.monotonic()
        wait_until(lambda: time.monotonic() - scaled > 3, message="load on four nodes")
    finally:
        answers = load.stop()

    assert operation["state"] == "succeeded", operation["error"]
    counts = tally(answers)
    busy = [a for a in answers if a.status == 503 and a.body.decode().strip() == BUSY_MESSAGE]
    counted = queue_timeouts()
    served_after = [a for a in answers if a.status == 200 and a.sent + a.seconds > scaled]
    finished = max(a.sent + a.seconds for a in answers)
    print(
        f"\n{len(answers)} requests at {rate:.0f}/s over {time.monotonic() - began:.0f} s: {dict(counts)}; "
        f"scale 1 -> 4 asked {asked - began:.0f} s into the load, took {scaled - asked:.0f} s; "
        f"queue timeouts counted by the router: {counted}; "
        f"served after the scale: {len(served_after) / (finished - scaled):.0f}/s"
    )
    assert set(counts) <= {200, 503}, "nothing failed but by the queue timeout"
    assert len(busy) == counts[503] == counted, "every 503 is a queue timeout, and counted"
    assert len(served_after) / (finished - scaled) > 2 * capacity, "the new nodes serve"
