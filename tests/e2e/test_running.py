"""The running contract: `manage.py down` destroys every local node and stops what it ran."""

import os

import pytest
import requests

from services.clouds.local import group_has_live_member
from tests.harness import ControlPlane

pytestmark = pytest.mark.integration


def test_down_destroys_every_local_node_and_its_processes(tmp_path):
    plane = ControlPlane(tmp_path)
    plane.manage("migrate", "--noinput")
    try:
        plane.start()
        api = plane.client("dave")
        service = api.create_service("tmp")
        node_dir = plane.home / "nodes" / service["nodes"][0]["name"]
        agent_group = int((node_dir / "agent.pid").read_text())
        assert requests.get(service["url"], timeout=5).status_code == 503  # no version yet: the router answers
    finally:
        plane.stop()
    result = plane.manage("down")
    assert "destroyed 1 local node(s)" in result.stdout
    assert not node_dir.exists()
    assert not group_has_live_member(agent_group), "the node's agent, HAProxy and instances are gone"
    with pytest.raises(requests.ConnectionError):
        requests.get(service["url"], timeout=5)
    assert os.listdir(plane.home / "nodes") == []
