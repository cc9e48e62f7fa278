"""`GET /v1/instances/{name}/logs`: the last lines of an instance's allow-listed log files, and nothing else."""

import os

import pytest

from conpaas_agent import instances
from conpaas_common.waiting import wait_until
from tests.agent.agent_helpers import app_zip, http_request, instance_body


def test_it_reads_the_last_lines_of_a_file(tmp_path):
    log = tmp_path / "access.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 11)))
    assert instances.read_tail(str(log), 3) == ["line 8", "line 9", "line 10"]
    assert instances.read_tail(str(log), 50)[0] == "line 1"
    assert instances.read_tail(str(tmp_path / "missing.log"), 3) == []


def test_it_reads_only_the_end_of_a_big_file_and_cuts_long_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(instances, "LOG_TAIL_BYTES", 100)
    log = tmp_path / "access.log"
    log.write_bytes(b"x" * 5000 + b"\n" + b"y" * 10 + b"\n" + b"\xff last\n")
    # The cut first line of the read is dropped; bytes that are not UTF-8 are replaced.
    assert instances.read_tail(str(log), 10) == ["y" * 10, "\ufffd last"]
    monkeypatch.setattr(instances, "LOG_TAIL_BYTES", 10000)
    assert len(instances.read_tail(str(log), 10)[0]) == instances.MAX_LOG_LINE_CHARS


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_it_refuses_a_log_that_links_elsewhere(tmp_path, plant):
    secret = tmp_path / "node.json"
    secret.write_text('{"secret": "s3cr3t"}\n')
    getattr(os, plant if plant == "symlink" else "link")(secret, tmp_path / "access.log")
    with pytest.raises(instances.InstanceError, match="not a plain file") as refused:
        instances.read_tail(str(tmp_path / "access.log"), 10)
    assert refused.value.status == 422


@pytest.mark.integration
def test_it_returns_the_allow_listed_logs_of_an_instance_and_refuses_other_paths(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("logs-v1.zip", app_zip())
    started = agent.call("PUT", "/v1/instances/i1", instance_body(url, sha, "v1")).json()
    for n in range(3):
        assert http_request(started["port"], "GET", f"/?visit={n}").status == 200

    # gunicorn writes a line once it has answered: wait for the last two.
    wait_until(lambda: len(" ".join(logs(agent, "i1", "lines=3")["access.log"]).split("/?visit=")) == 4, timeout=10)
    answer = agent.call("GET", "/v1/instances/i1/logs?lines=2")
    assert answer.status == 200, answer.body
    files = answer.json()["files"]
    assert list(files) == ["instance.log", "access.log"]  # python's allow-list, in its order
    assert len(files["access.log"]) == 2
    # Two gunicorn workers may write their lines in either order: the last two are these two.
    last_two = " ".join(files["access.log"])
    assert "/?visit=1" in last_two and "/?visit=2" in last_two and "/?visit=0" not in last_two
    only = agent.call("GET", "/v1/instances/i1/logs?file=access.log&lines=1").json()["files"]
    assert list(only) == ["access.log"] and len(only["access.log"]) == 1 and "/?visit=" in only["access.log"][0]

    # Nothing off the allow-list is read: no other name, no path, no escape from the directory.
    for wanted in ("state.json", "../../state.json", "/etc/passwd", "home/.bashrc", "agent.log"):
        refused = agent.call("GET", f"/v1/instances/i1/logs?file={wanted}")
        assert refused.status == 400, (wanted, refused.body)
        assert "is not a log file of i1" in refused.json()["error"]
    for bad in ("0", "1001", "x", "-5"):
        assert agent.call("GET", f"/v1/instances/i1/logs?lines={bad}").status == 400
    assert agent.call("GET", "/v1/instances/../state.json/logs").status == 404
    assert agent.call("GET", "/v1/instances/nope/logs").status == 404
    assert agent.call("DELETE", "/v1/instances/i1/logs").status == 405
    # Unsigned, like every call: refused.
    assert agent.call("GET", "/v1/instances/i1/logs", secret="wrong").status == 401

    # A stopped instance keeps its directory, and its logs can still be read.
    assert agent.call("DELETE", "/v1/instances/i1").status == 204
    kept = agent.call("GET", "/v1/instances/i1/logs").json()["files"]
    assert list(kept) == ["instance.log"]


def logs(agent, name, query=""):
    answer = agent.call("GET", f"/v1/instances/{name}/logs?{query}")
    assert answer.status == 200, answer.body
    return answer.json()["files"]
