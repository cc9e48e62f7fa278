"""Fixtures for the node agent tests: real agent processes, real HAProxy, real gunicorn.

No Django here: the agent and what it shares with the control plane (``conpaas_agent``,
``conpaas_common``, both in ``images/``) are installed packages of the project; the helpers live
in ``agent_helpers.py`` next to this file.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.agent.agent_helpers import AgentProcess, ArchiveServer, unprivileged_agent


@pytest.fixture(scope="session")
def archives(tmp_path_factory):
    """A tiny HTTP server the agents download archives from."""
    server = ArchiveServer(tmp_path_factory.mktemp("archives"))
    yield server
    server.close()


@pytest.fixture
def start_agent(tmp_path):
    """Factory: start_agent(roles=[...]) -> AgentProcess; every node is destroyed afterwards."""
    started = []

    def start(roles=("proxy", "backend"), name="node", extra_env=None):
        agent = AgentProcess(tmp_path / name, list(roles), extra_env)
        started.append(agent)
        return agent.start()

    yield start
    for agent in started:
        agent.destroy()


@pytest.fixture
def data_agent():
    """A backend node running as `nobody`, for data services (PostgreSQL refuses root)."""
    with unprivileged_agent() as agent:
        yield agent


@pytest.fixture
def tmp_path():
    """A short folder of the test's own: HAProxy refuses a unix socket's path longer than 97
    characters, and under pytest-xdist pytest's own folders are longer (popen-gwN/)."""
    path = Path(tempfile.mkdtemp(prefix="cp-agent-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
