"""A storage service's nodes: two real agents run SeaweedFS as `nobody` (the master node's
`weed server` and a volume node joining it); with replication 001 every object is on both, so
killing the second node loses nothing readable."""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conpaas_common.waiting import wait_until
from conpaas_common.weed import WeedMissing, checked_weed
from tests.agent.agent_helpers import unprivileged_agent

WEED = str(Path(sys.executable).with_name("weed"))
ACCESS_KEY = "CPTESTADMIN0000000001"
PASSWORD = "storage-secret-" + "x" * 20


@pytest.fixture(autouse=True)
def weed_for_nodes(monkeypatch):
    monkeypatch.setenv("CONPAAS_WEED", WEED)


def weed_shell(details: dict, script: str) -> str:
    argv = [WEED, "shell", f"-master={details['master']}", f"-filer={details['filer']}"]
    result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def data_nodes(details: dict) -> int:
    host_port = details["master"].rsplit(".", 1)[0]
    with urllib.request.urlopen(f"http://{host_port}/dir/status", timeout=5) as reply:
        topology = json.load(reply)["Topology"]
    return sum(len(rack["DataNodes"]) for dc in topology["DataCenters"] for rack in dc["Racks"])


# On two workers, beside the backup tests' restores, its first puts into a 2-node store failed
# once with weed's InternalError after 2 minutes (a fresh clone's run, 2026-12-07); one at a time
# it passed every run. The cause is not found yet: the closing note of issue 19 says so.
@pytest.mark.serial
def test_it_keeps_every_object_on_two_nodes_and_loses_none_with_the_second_dead():
    import boto3

    with unprivileged_agent() as first, unprivileged_agent() as second:
        spec = {"runtime": "storage", "role": "master", "password": PASSWORD, "access_key": ACCESS_KEY}
        reply = first.call("PUT", "/v1/instances/server", spec)
        assert reply.status == 200, reply.body
        assert PASSWORD not in reply.body.decode()
        master = reply.json()
        details = master["details"]
        ps = subprocess.run(["ps", "-o", "user=,args=", "-p", str(master["pid"])], capture_output=True, text=True)
        assert ps.stdout.split()[0] == "nobody" and PASSWORD not in ps.stdout
        # Its local sockets are its own, not /tmp/seaweedfs-*-<port>.sock, which any node's weed
        # (another user's) may have left behind with the same port.
        s3_socket = first.home / "instances" / "server" / "s3.sock"
        wait_until(lambda: s3_socket.exists() and stat.S_ISSOCK(s3_socket.stat().st_mode), timeout=10)

        reply = second.call("PUT", "/v1/instances/server", {"runtime": "storage", "role": "volume", **details})
        assert reply.status == 400 and b"filer" in reply.body  # only the master's address
        reply = second.call(
            "PUT", "/v1/instances/server", {"runtime": "storage", "role": "volume", "master": details["master"]}
        )
        assert reply.status == 200, reply.body
        wait_until(lambda: data_nodes(details) == 2, 30, message="the volume node to join the master")
        said = weed_shell(
            details, "fs.configure -locationPrefix=/buckets/ -replication=001 -volumeGrowthCount=2 -apply\n"
        )
        assert '"replication":  "001"' in said or '"replication": "001"' in said, said

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{master['port']}",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=PASSWORD,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="photos")
        objects = {f"o{i}": bytes([i]) * (64 << 10) for i in range(20)}
        for key, body in objects.items():
            s3.put_object(Bucket="photos", Key=key, Body=body)
        # Every volume of the bucket's collection is 001 and held by both nodes.
        held = re.findall(
            r"volume Id:(\d+), .*ReplicaPlacement:(\d+), Collection:photos,", weed_shell(details, "volume.list\n")
        )
        assert held and {placement for _, placement in held} == {"001"}, held
        assert all([vid for vid, _ in held].count(vid) == 2 for vid, _ in held), held

        os.killpg(second.pgid, signal.SIGKILL)  # kill -9 the whole node: its agent and volume server
        second.destroy()  # reaps it
        for key, body in objects.items():
            assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == body, key
        os.killpg(first.pgid, signal.SIGKILL)  # a test's store is worth no graceful stop (weed takes 10 s)


def test_it_refuses_a_bad_storage_spec():
    with unprivileged_agent() as agent:
        for body, message in [
            ({"runtime": "storage"}, b"role is required"),
            ({"runtime": "storage", "role": "master", "password": PASSWORD}, b"access_key is required"),
            ({"runtime": "storage", "role": "volume", "master": "x; rm -rf /"}, b"master is required"),
        ]:
            reply = agent.call("PUT", "/v1/instances/server", body)
            assert reply.status == 400 and message in reply.body, reply.body


def test_a_node_runs_no_weed_but_the_pinned_one(monkeypatch):
    home = Path(tempfile.mkdtemp(prefix="conpaas-weed-"))  # where the node's user (nobody) reads
    try:
        home.chmod(0o755)
        impostor = home / "weed"
        impostor.write_bytes(b"#!/bin/sh\necho pwned\n")
        impostor.chmod(0o755)
        monkeypatch.setenv("CONPAAS_WEED", str(impostor))
        with unprivileged_agent() as agent:
            spec = {"runtime": "storage", "role": "master", "password": PASSWORD, "access_key": ACCESS_KEY}
            reply = agent.call("PUT", "/v1/instances/server", spec)
    finally:
        shutil.rmtree(home)
    assert reply.status == 422 and b"is not SeaweedFS 4.48's weed" in reply.body, reply.body
    assert checked_weed(WEED) == WEED
    with pytest.raises(WeedMissing, match="not installed at /nowhere/weed"):
        checked_weed("/nowhere/weed")
