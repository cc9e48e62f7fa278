"""Failing clouds and dead nodes, end to end: real control plane, real local nodes, kill -9."""

import json
import os
import signal
from datetime import datetime

import pytest
import requests

from conpaas_common.waiting import wait_until
from services.clouds.local import LocalNodeDriver
from tests.apps import label_app
from tests.harness import running_control_plane

pytestmark = pytest.mark.integration


def events(api, service_id) -> list[dict]:
    return api.get(f"/api/v1/services/{service_id}/events/").json()


def nodes(api, service_id) -> list[dict]:
    return api.get(f"/api/v1/services/{service_id}/nodes/").json()


def answer(url: str) -> str | None:
    try:
        return requests.get(url, timeout=5).text
    except requests.RequestException:
        return None


def healed(api, service_id) -> dict | None:
    return next((e for e in events(api, service_id) if e["message"].startswith("healed in ")), None)


@pytest.fixture
def shop(control_plane):
    """A python service serving v1 in production."""
    api = control_plane.client("heidi")
    service = api.create_service("heal")
    v1 = api.upload(service["id"], label_app("heal"), "v1").json()
    assert api.deploy(service["id"], "production", v1["id"])["state"] == "succeeded"
    yield api, api.get(f"/api/v1/services/{service['id']}/").json()
    api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


# --- failing clouds -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failing_plane(tmp_path_factory):
    """A control plane whose local cloud fails every other node creation: the first is refused,
    the third starts an agent that exits at once (CONPAAS_LOCAL_FAIL_RATE=0.5)."""
    home = tmp_path_factory.mktemp("failing-cloud")
    settings = {"CONPAAS_LOCAL_FAIL_RATE": "0.5", "CONPAAS_BOOT_BACKOFF": "0.2", "CONPAAS_HEAL_INTERVAL": "0"}
    with running_control_plane(home, **settings) as plane:
        yield plane


def test_node_creation_is_retried_after_both_kinds_of_failure(failing_plane):
    api = failing_plane.client("erin")
    service = api.create_service("flaky")  # creation 1 refused, 2 boots
    sid = service["id"]
    scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 2})
    assert api.wait_operation(scale.json())["state"] == "succeeded"  # creation 3 dies, 4 boots

    live = {node["name"] for node in nodes(api, sid)}
    assert len(live) == 2 and {node["state"] for node in nodes(api, sid)} == {"running"}
    history = list(reversed(events(api, sid)))
    refused = next(e for e in history if "the local cloud refused node" in e["message"])
    assert refused["outcome"] == "failed" and refused["message"].endswith("trying again in 0.2 s")
    died = next(e for e in history if "stopped while booting" in e["message"])
    assert (
        "its last log lines: boot.log: injected failure (CONPAAS_LOCAL_FAIL_RATE): the agent exits at once"
        in (died["message"])
    )
    booting = [e for e in history if e["message"].startswith("booting node") and e["id"] < died["id"]][-1]
    noticed = datetime.fromisoformat(died["created"]) - datetime.fromisoformat(booting["created"])
    assert noticed.total_seconds() < 10, "noticed when the agent exited, not at the boot timeout"
    # Nothing of the failed attempts is left: no home, no slot (user, namespace, cgroups).
    home = failing_plane.home / "nodes"
    assert {path.name for path in home.iterdir()} == live | {".creations"}
    isolation = LocalNodeDriver(str(home)).isolation
    if isolation is not None:
        assert {name for name in live if isolation.slot_of(name)} == live
        failed = {e["message"].split()[2] for e in history if e["message"].startswith("booting node")} - live
        assert len(failed) == 2 and not any(isolation.slot_of(name) for name in failed)


# --- self-healing ---------------------------------------------------------------------------------


def test_a_killed_backend_node_is_replaced(shop, control_plane):
    api, service = shop
    sid, url = service["id"], service["url"]
    scale = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 2})
    assert api.wait_operation(scale.json())["state"] == "succeeded"
    victim = next(node["name"] for node in nodes(api, sid) if node["role"] == "backend")

    assert control_plane.kill_node(victim) > 0

    def replaced():
        backends = [node for node in nodes(api, sid) if node["role"] == "backend"]
        return len(backends) == 1 and backends[0]["name"] != victim and backends[0]["state"] == "running"

    wait_until(replaced, timeout=60, interval=0.5, message=f"{victim} to be replaced")
    summary = wait_until(lambda: healed(api, sid), timeout=30, message="the heal to end")
    assert f"replaced {victim} by " in summary["message"]
    assert {answer(url) for _ in range(6)} == {"v1\n"}


def test_a_killed_router_node_is_replaced_on_the_same_url(shop, control_plane):
    api, service = shop
    sid, url = service["id"], service["url"]
    old = service["nodes"][0]["name"]

    control_plane.kill_node(old)

    wait_until(lambda: answer(url) == "v1\n", timeout=90, interval=0.5, message="the service to answer again")
    after = api.get(f"/api/v1/services/{sid}/").json()
    assert after["url"] == url
    assert [node["name"] for node in after["nodes"]] != [old]
    assert "so that the service keeps its URL" in " ".join(e["message"] for e in events(api, sid))


# Through the broker: the heal check is a timer's task, and the heal an operation it enqueues.
@pytest.mark.broker
def test_a_killed_instance_is_restarted(shop, control_plane):
    api, service = shop
    sid, url = service["id"], service["url"]
    node = service["nodes"][0]["name"]
    state = json.loads((control_plane.home / "nodes" / node / "state.json").read_text())
    ((name, instance),) = state["instances"].items()

    os.kill(instance["pid"], signal.SIGKILL)

    summary = wait_until(lambda: healed(api, sid), timeout=60, interval=0.5, message="the heal to end")
    assert "started 1 instance(s)" in summary["message"]
    assert any(e["message"].startswith(f"restarted {name}: it was not running") for e in events(api, sid))
    assert answer(url) == "v1\n"
    assert [n["name"] for n in nodes(api, sid)] == [node], "the node itself was not replaced"
