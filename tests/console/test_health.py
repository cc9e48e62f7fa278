from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from services import operations
from services.agent import AgentClient
from services.models import Node
from tests.factories import CodeVersionFactory, ServiceFactory
from versions.models import Environment, Instance, InstanceState

pytestmark = pytest.mark.django_db


def running_node(service, name: str) -> Node:
    return Node.objects.create(
        service=service,
        name=name,
        cloud="local",
        is_proxy=True,
        is_backend=True,
        state="running",
        address="127.0.0.1",
        agent_port=9,
        http_port=8080,
    )


@pytest.fixture
def routed(service):
    """shop, routed by a running proxy node, v1 in production and v2 in development."""
    node = running_node(service, "shop-1")
    v1, v2 = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    for version in (v1, v2):
        Instance.objects.create(node=node, version=version, port=1, state=InstanceState.RUNNING)
    service.environments.filter(name="production").update(version=v1)
    service.environments.filter(name="development").update(version=v2)
    return service


@pytest.fixture
def no_agent(monkeypatch):
    def refuse(client, method, path, *args, **kwargs):
        raise AssertionError(f"a page view called the agent of {client.node.name}: {method} {path}")

    monkeypatch.setattr(AgentClient, "call", refuse)


def save_verdict(service, name: str, problems: list[str], seconds_ago: float = 3) -> None:
    environment = service.environments.get(name=name)
    Environment.objects.filter(pk=environment.pk).update(
        health_problems=problems,
        health_checked=timezone.now() - timedelta(seconds=seconds_ago),
        health_version=environment.version,
    )


def test_no_page_calls_an_agent(client, routed, no_agent):
    pk = routed.pk
    with operations.holding(routed, "deploy", None):  # busy: the pages that poll, poll
        pages = [
            "/",
            "/services/list/",
            f"/services/{pk}/",
            f"/services/{pk}/overview/",
            f"/services/{pk}/activity/?polling=1",
            f"/services/{pk}/swap/?environment=development",
            "/?q=sho&page=1",
        ]
        for url in pages:
            assert client.get(url).status_code == 200, url
    save_verdict(routed, "production", [])
    for url in pages:
        assert client.get(url).status_code == 200, url


def test_it_shows_the_saved_health_and_how_old_it_is(client, routed, no_agent):
    save_verdict(routed, "production", [], seconds_ago=7)
    save_verdict(routed, "development", ["instance shop-1-v2 is DOWN (L7STS, HTTP 500)"], seconds_ago=65)
    page = client.get(f"/services/{routed.pk}/").content.decode()
    assert '<span class="badge ok">healthy</span>' in page and "checked 7 s ago" in page
    assert "unhealthy" in page and "instance shop-1-v2 is DOWN (L7STS, HTTP 500)" in page
    assert "checked 65 s ago (stale)" in page, "three missed timer passes (20 s each) are shown as stale"
    swap = client.get(f"/services/{routed.pk}/swap/?environment=development").content.decode()
    assert "Swap not possible now: v2 in development is not healthy: instance shop-1-v2 is DOWN" in swap


def test_it_says_when_health_was_never_checked(client, routed, no_agent):
    page = client.get("/").content.decode()
    assert page.count("not checked yet") == 2
    assert "checked" not in page.replace("not checked yet", "")


def test_the_dashboard_pages_and_finds_services(client, alice, no_agent):
    for n in range(60):
        ServiceFactory(owner=alice, name=f"app-{n:02d}")
    first = client.get("/").content.decode()
    assert "Services 1–24 of 60" in first and "app-23" in first and "app-24" not in first
    assert "Page 1 of 3" in first and 'href="?page=2"' in first
    last = client.get("/?page=3").content.decode()
    assert "Services 49–60 of 60" in last and "app-48" in last and "app-59" in last and "app-47" not in last
    assert 'href="?page=2"' in last and "Next" not in last
    found = client.get("/?q=app-5").content.decode()
    assert "Services 1–10 of 10 matching “app-5”" in found and "app-07" not in found
    assert "No service matches “nothing”" in client.get("/?q=nothing").content.decode()


def queries_of(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_dashboard_makes_the_same_queries_for_any_number_of_services(client, alice, no_agent):
    def add(count: int, start: int) -> None:
        for n in range(start, start + count):
            service = ServiceFactory(owner=alice, name=f"app-{n:03d}")
            running_node(service, f"app-{n:03d}-1")
            version = CodeVersionFactory(service=service, label="v1")
            service.environments.filter(name="production").update(version=version)

    add(3, 0)
    few = queries_of(client, "/")
    add(40, 3)
    assert queries_of(client, "/") == few
    assert queries_of(client, "/services/list/") <= few
