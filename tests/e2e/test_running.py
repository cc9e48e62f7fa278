"""The running contract: `manage.py down` destroys every local node and stops what it ran."""

import os

import pytest
import requests

from conpaas_common.waiting import wait_until
from services.clouds.local import group_has_live_member
from tests.apps import label_app
from tests.harness import ControlPlane

pytestmark = pytest.mark.integration


def test_down_destroys_every_local_node_and_up_brings_the_services_back(tmp_path):
    plane = ControlPlane(tmp_path)
    plane.manage("migrate", "--noinput")
    try:
        plane.start()
        api = plane.client("dave")
        service = api.create_service("tmp")
        node_dir = plane.home / "nodes" / service["nodes"][0]["name"]
        agent_group = int((node_dir / "agent.pid").read_text())
        v1 = api.upload(service["id"], label_app("down"), "v1").json()
        assert api.deploy(service["id"], "production", v1["id"])["state"] == "succeeded"
        assert requests.get(service["url"], timeout=5).text == "v1\n"
        other = api.create_service("tmp2")  # nodes are stopped side by side
        plane.stop()

        result = plane.manage("down")
        assert "destroyed 2 local node(s)" in result.stdout and "(2 of 2)" in result.stdout, result.stdout
        assert not node_dir.exists() and not (plane.home / "nodes" / other["nodes"][0]["name"]).exists()
        assert not group_has_live_member(agent_group), "the node's agent, HAProxy and instances are gone"
        # Its address is gone with its namespace: a connection times out (ConnectTimeout) rather
        # than being refused, so the wait is kept short.
        with pytest.raises(requests.ConnectionError):
            requests.get(service["url"], timeout=1)
        assert os.listdir(plane.home / "nodes") == []

        plane.start()  # the database still wants the service: it is booted again and serves v1
        back = wait_until(
            lambda: (s := api.get(f"/api/v1/services/{service['id']}/").json())["url"] and s,
            timeout=60,
            message="the service to be booted again",
        )
        wait_until(lambda: requests.get(back["url"], timeout=5).text == "v1\n", timeout=60, message="v1 to serve")
    finally:  # whatever failed, stop what this test started
        plane.stop()
        plane.manage("down", check=False)
