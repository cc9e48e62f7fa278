"""GET /api/v1/services/{id}/logs/: recent log lines of an environment's instances, across nodes."""

import pytest

from routing.table import push
from services import agent
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory
from tests.fakes import FakeFleet
from versions.instances import Release, ensure_instances
from versions.models import Environment, FailedInstanceLog


@pytest.fixture
def fleet(monkeypatch) -> FakeFleet:
    fleet = FakeFleet()
    monkeypatch.setattr(agent, "client_for", fleet.client)
    return fleet


@pytest.fixture
def running(service, fleet):
    """`shop` on two nodes: v1 in production, v2 in development, each instance with its logs."""
    nodes = [NodeFactory(service=service, is_proxy=True), NodeFactory(service=service)]
    for name, label in (("production", "v1"), ("development", "v2")):
        version = CodeVersionFactory(service=service, label=label)
        environment = Environment.objects.get(service=service, name=name)
        ensure_instances(service, Release.of(environment, version))
        Environment.objects.filter(pk=environment.pk).update(version=version)
        for node in nodes:
            instance = f"{node.name}-v{version.pk}"
            fleet.logs[instance] = {
                "instance.log": [f"{label} booting on {node.name}"],
                "access.log": [f'"GET /{label}/{n} HTTP/1.1" 200' for n in range(3)],
            }
    push(service)
    return nodes


def test_it_tags_each_line_with_node_instance_and_file(api, service, running):
    response = api.get(f"/api/v1/services/{service.pk}/logs/?environment=development&lines=2")
    assert response.status_code == 200, response.content
    body = response.json()
    version = Environment.objects.get(service=service, name="development").version_id
    assert (body["environment"], body["version"], body["errors"]) == ("development", version, [])
    first, second = sorted(node.name for node in running)
    assert body["lines"][:3] == [
        {"node": first, "instance": f"{first}-v{version}", "file": "instance.log", "line": f"v2 booting on {first}"},
        {"node": first, "instance": f"{first}-v{version}", "file": "access.log", "line": '"GET /v2/1 HTTP/1.1" 200'},
        {"node": first, "instance": f"{first}-v{version}", "file": "access.log", "line": '"GET /v2/2 HTTP/1.1" 200'},
    ]
    assert {line["node"] for line in body["lines"]} == {first, second}
    assert len(body["lines"]) == 6
    assert not any("v1" in line["line"] for line in body["lines"])


def test_it_reads_production_by_default(api, service, running, fleet):
    body = api.get(f"/api/v1/services/{service.pk}/logs/").json()
    assert body["environment"] == "production" and len(body["lines"]) == 8
    assert fleet.calls_to("instance_logs")


def test_a_node_that_does_not_answer_is_an_error_beside_the_others_lines(api, service, running, fleet):
    fleet.unreachable.add(running[0].name)
    body = api.get(f"/api/v1/services/{service.pk}/logs/?lines=1").json()
    assert {line["node"] for line in body["lines"]} == {running[1].name}
    assert len(body["errors"]) == 1 and f"node {running[0].name} did not answer" in body["errors"][0]


def test_an_environment_without_a_version_has_no_lines(api, service, running, fleet):
    api.post(f"/api/v1/services/{service.pk}/environments/", {"name": "staging"}, format="json")
    response = api.get(f"/api/v1/services/{service.pk}/logs/?environment=staging")
    assert response.status_code == 200
    assert response.json() == {
        "environment": "staging",
        "version": None,
        "lines": [],
        "errors": [],
        "last_failure": None,
    }
    assert not fleet.calls_to("instance_logs")


@pytest.mark.parametrize("lines", ["0", "1001", "-1", "x", "", "1.5", "²"])
def test_it_refuses_a_bad_number_of_lines_naming_it(api, service, running, fleet, lines):
    response = api.get(f"/api/v1/services/{service.pk}/logs/", {"lines": lines})
    assert response.status_code == 400
    assert response.json() == {"lines": "a whole number from 1 to 1000"}
    assert not fleet.calls_to("instance_logs")


def test_it_refuses_an_empty_environment_naming_it(api, service, running, fleet):
    response = api.get(f"/api/v1/services/{service.pk}/logs/?environment=")
    assert response.status_code == 400 and "environment" in response.json()
    assert not fleet.calls_to("instance_logs")


def test_an_unknown_environment_is_a_404(api, service, running, fleet):
    response = api.get(f"/api/v1/services/{service.pk}/logs/?environment=nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "shop has no environment named 'nope' (it has: production, development)"}
    assert not fleet.calls_to("instance_logs")


def test_another_users_service_is_a_404(api, bob, fleet):
    other = ServiceFactory(owner=bob, name="theirs")
    assert api.get(f"/api/v1/services/{other.pk}/logs/").status_code == 404
    assert not fleet.calls_to("instance_logs")


def test_failed_reads_the_logs_kept_from_the_last_failed_deploy_into_the_environment(api, service, running, fleet):
    FailedInstanceLog.objects.create(
        service=service,
        environment="development",
        version_label="v3",
        node_name="n1",
        instance="n1-v3",
        files=[["instance.log", ["v3 broke"]]],
    )
    for node in ("n1", "n2"):
        FailedInstanceLog.objects.create(
            service=service,
            environment="development",
            version_label="v4",
            node_name=node,
            instance=f"{node}-v4",
            files=[["instance.log", ["starting", f"v4 broke on {node}"]], ["access.log", ['"GET / HTTP/1.1" 500']]],
        )
    FailedInstanceLog.objects.create(
        service=service,
        environment="production",
        version_label="v5",
        node_name="n1",
        instance="n1-v5",
        files=[["instance.log", ["v5 broke"]]],
    )
    calls = len(fleet.calls)

    body = api.get(f"/api/v1/services/{service.pk}/logs/?environment=development&failed=true&lines=1").json()

    assert body["version"] is None and body["errors"] == []
    assert body["last_failure"]["version"] == "v4"
    assert body["lines"] == [
        {"node": "n1", "instance": "n1-v4", "file": "instance.log", "line": "v4 broke on n1"},
        {"node": "n1", "instance": "n1-v4", "file": "access.log", "line": '"GET / HTTP/1.1" 500'},
        {"node": "n2", "instance": "n2-v4", "file": "instance.log", "line": "v4 broke on n2"},
        {"node": "n2", "instance": "n2-v4", "file": "access.log", "line": '"GET / HTTP/1.1" 500'},
    ]
    assert len(fleet.calls) == calls, "kept logs need no node"
    # The live logs say that a deploy failed, for a client to point at its logs.
    live = api.get(f"/api/v1/services/{service.pk}/logs/?environment=development").json()
    assert live["last_failure"]["version"] == "v4" and live["lines"]


def test_failed_without_a_failed_deploy_has_no_lines(api, service, running):
    body = api.get(f"/api/v1/services/{service.pk}/logs/?failed=true").json()
    assert (body["lines"], body["last_failure"]) == ([], None)


@pytest.mark.parametrize("failed", ["yes", "", "1"])
def test_it_refuses_a_bad_failed_flag(api, service, running, failed):
    response = api.get(f"/api/v1/services/{service.pk}/logs/", {"failed": failed})
    assert response.status_code == 400 and response.json() == {"failed": "true or false"}


def test_failed_in_an_unknown_environment_is_a_404(api, service, running):
    response = api.get(f"/api/v1/services/{service.pk}/logs/?environment=nope&failed=true")
    assert response.status_code == 404
