"""The agent's route table, asked directly (no server): which answer a path and a method get."""

import pytest

from conpaas_agent.server import ROUTES, Agent, RequestRefused


@pytest.fixture
def agent(tmp_path) -> Agent:
    """An agent with neither role: only its status answers."""
    return Agent({"name": "n1", "secret": "s", "roles": [], "agent_bind": "127.0.0.1:0", "home": str(tmp_path)})


def answer(agent: Agent, method: str, path: str) -> int:
    try:
        return agent.handle(method, path, {}, None)[0]
    except RequestRefused as exc:
        return exc.status


def test_it_answers_the_status_of_a_node_without_roles(agent):
    assert agent.handle("GET", "/v1/status", {}, None) == (
        200,
        {"name": "n1", "roles": [], "instances": {}, "proxy": None},
    )


def test_it_answers_404_to_an_unknown_path(agent):
    assert answer(agent, "GET", "/v1/nothing") == 404
    assert answer(agent, "GET", "/v1/instances/a/b/c") == 404


def test_it_answers_404_for_a_role_the_node_does_not_have_whatever_the_method(agent):
    with pytest.raises(RequestRefused, match="node n1 has no backend role"):
        agent.handle("PATCH", "/v1/instances/i1", {}, None)
    with pytest.raises(RequestRefused, match="node n1 has no proxy role"):
        agent.handle("GET", "/v1/proxy/metrics", {}, None)


def test_it_answers_405_to_a_method_a_known_path_does_not_take(agent):
    with pytest.raises(RequestRefused, match="POST is not allowed on /v1/status") as raised:
        agent.handle("POST", "/v1/status", {}, None)
    assert raised.value.status == 405


def test_every_route_of_a_path_names_the_same_role_and_each_method_once():
    roles, seen = {}, set()
    for route in ROUTES:
        assert roles.setdefault(route.path.pattern, route.role) == route.role
        assert (route.method, route.path.pattern) not in seen
        seen.add((route.method, route.path.pattern))
