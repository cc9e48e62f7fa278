"""The agent runs a version's release command once, before any instance of it: POST /v1/releases."""

import pytest

from tests.agent.agent_helpers import app_zip, instance_body

pytestmark = pytest.mark.integration

MIGRATE = """\
import os
import sys

print("migrating with", os.environ.get("DATABASE_URL"), "as", os.environ.get("CONPAAS_VERSION"))
print("agent secret:", os.environ.get("CONPAAS_AGENT_SECRET", "not here"))
sys.exit(int(os.environ.get("FAIL_WITH", "0")))
"""


def release(agent, url, sha, command, env=None):
    return agent.call("POST", "/v1/releases", {**instance_body(url, sha, "v1", env=env), "command": command})


def test_it_runs_the_release_command_in_the_code_with_the_environment_given(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("release-ok.zip", app_zip({"migrate.py": MIGRATE}))

    answer = release(agent, url, sha, "python migrate.py", {"DATABASE_URL": "postgresql://db/wiki"})

    assert answer.status == 200, answer.json()
    body = answer.json()
    assert body["exit_code"] == 0
    assert "migrating with postgresql://db/wiki as v1" in body["output"]
    assert "agent secret: not here" in body["output"]  # the allow-list environment, as instances get
    assert agent.call("GET", "/v1/status").json()["instances"] == {}  # nothing left running


def test_a_failing_release_command_answers_its_exit_code_and_output(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("release-fails.zip", app_zip({"migrate.py": MIGRATE}))

    failed = release(agent, url, sha, "python migrate.py", {"FAIL_WITH": "3"}).json()
    missing = release(agent, url, sha, "no-such-program --now").json()

    assert failed["exit_code"] == 3 and "migrating with None" in failed["output"]
    assert missing["exit_code"] == 127 and "no-such-program" in missing["output"]


def test_it_refuses_a_bad_command_and_runs_no_shell(start_agent, archives, tmp_path):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("release-shell.zip", app_zip())
    marker = tmp_path / "shell-ran"

    unbalanced = release(agent, url, sha, "python 'migrate.py")
    empty = release(agent, url, sha, "  ")
    no_shell = release(agent, url, sha, f"true; touch {marker}").json()

    assert unbalanced.status == 400 and unbalanced.json()["error"] == "command has unbalanced quotes"
    assert empty.status == 400 and empty.json()["error"] == "command must be a command"
    assert no_shell["exit_code"] == 127 and not marker.exists()  # `true;` is a program name, not a shell


def test_an_unsigned_release_is_refused(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("release-unsigned.zip", app_zip())

    answer = agent.call("POST", "/v1/releases", {**instance_body(url, sha, "v1"), "command": "true"}, secret="wrong")

    assert answer.status == 401
