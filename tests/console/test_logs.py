"""The service page's logs: recent lines of the selected environment, loaded after the page."""

import pytest
from django.test import Client

from services import agent
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory, UserFactory
from tests.fakes import FakeFleet
from versions.instances import Release, ensure_instances
from versions.models import Environment, FailedInstanceLog

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(monkeypatch) -> FakeFleet:
    fleet = FakeFleet()
    monkeypatch.setattr(agent, "client_for", fleet.client)
    return fleet


@pytest.fixture
def running(service, fleet):
    node = NodeFactory(service=service, is_proxy=True)
    for name, label in (("production", "v1"), ("development", "v2")):
        version = CodeVersionFactory(service=service, label=label)
        environment = Environment.objects.get(service=service, name=name)
        ensure_instances(service, Release.of(environment, version))
        Environment.objects.filter(pk=environment.pk).update(version=version)
        fleet.logs[f"{node.name}-v{version.pk}"] = {"access.log": [f'"GET /{label} HTTP/1.1" 200 <script>']}
    return node


def test_the_page_loads_the_logs_after_it_is_shown(client, service, running, fleet):
    page = client.get(f"/services/{service.pk}/").content.decode()
    assert f'hx-get="/services/{service.pk}/logs/"' in page
    assert not fleet.calls_to("instance_logs")  # the page itself asks no agent


def test_it_shows_production_by_default_and_the_selected_environment(client, service, running, fleet):
    production = client.get(f"/services/{service.pk}/logs/").content.decode()
    assert "GET /v1 HTTP/1.1" in production and "GET /v2" not in production
    assert f"{running.name}-v" in production and "access.log" in production
    assert "&lt;script&gt;" in production and "<script>" not in production  # a line is text, never markup
    development = client.get(f"/services/{service.pk}/logs/?environment=development").content.decode()
    assert "GET /v2 HTTP/1.1" in development and "GET /v1" not in development
    assert '<option value="development" selected>' in development


def test_a_node_that_does_not_answer_is_said(client, service, running, fleet):
    fleet.unreachable.add(running.name)
    page = client.get(f"/services/{service.pk}/logs/").content.decode()
    assert f"node {running.name} did not answer" in page


def test_an_unknown_environment_is_a_404_with_the_reason(client, service, running, fleet):
    response = client.get(f"/services/{service.pk}/logs/?environment=nope")
    assert response.status_code == 404
    assert (
        "shop has no environment named &#x27;nope&#x27; (it has: production, development)" in response.content.decode()
    )
    assert not fleet.calls_to("instance_logs")


def test_another_users_service_is_a_404(client, bob, fleet):
    other = ServiceFactory(owner=bob, name="theirs")
    assert client.get(f"/services/{other.pk}/logs/").status_code == 404
    assert not fleet.calls_to("instance_logs")


def test_operators_read_a_failed_deploys_kept_logs_in_the_admin():
    kept = FailedInstanceLog.objects.create(
        service=ServiceFactory(name="shop"),
        environment="development",
        version_label="v3",
        node_name="shop-1",
        instance="shop-1-v3",
        files=[["instance.log", ["RuntimeError: no SECRET_KEY"]]],
    )
    operator = Client()
    operator.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    listing = operator.get("/admin/versions/failedinstancelog/").content.decode()
    assert "shop-1-v3" in listing and "development" in listing
    page = operator.get(f"/admin/versions/failedinstancelog/{kept.pk}/change/").content.decode()
    assert "RuntimeError: no SECRET_KEY" in page
    assert operator.get("/admin/versions/failedinstancelog/add/").status_code == 403, "failed deploys write them"
