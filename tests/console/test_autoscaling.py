"""The service page's autoscaling form: the same rules as the API (workflows.autoscale.configure),
each refusal shown on its field with nothing stored."""

import pytest
from django.test import Client

from routing.models import MetricPoint
from services.models import Event
from tests.factories import ServiceFactory, UserFactory
from workflows.models import Autoscaling

pytestmark = pytest.mark.django_db

FORM = {"enabled": "on", "target_p95_ms": "250", "min_nodes": "1", "max_nodes": "4", "cooldown_s": "30"}


def test_the_service_page_shows_the_form_with_the_policy(client, service):
    Autoscaling.objects.create(
        service=service,
        enabled=True,
        target_p95_ms=400,
        last_decision={"action": "out", "nodes": 3, "reason": "over the target of 400 ms"},
    )

    page = client.get(f"/services/{service.pk}/").content.decode()

    assert '<h2 id="autoscaling-title">Autoscaling</h2>' in page
    assert 'name="target_p95_ms" value="400"' in page
    assert 'name="enabled" id="id_enabled" checked' in page
    assert "Last decision: <strong>out</strong> to 3 node(s) — over the target of 400 ms" in page


def test_it_turns_autoscaling_on(client, service, alice):
    response = client.post(f"/services/{service.pk}/autoscaling/", FORM)

    assert response.status_code == 302 and response["Location"].endswith(f"/services/{service.pk}/#autoscaling")
    policy = Autoscaling.objects.get(service=service)
    assert (policy.enabled, policy.target_p95_ms, policy.min_nodes, policy.max_nodes) == (True, 250, 1, 4)
    assert Event.objects.get(action="autoscale").actor == alice
    assert "Autoscaling of shop is on." in client.get(f"/services/{service.pk}/").content.decode()


def test_an_unchecked_box_turns_it_off(client, service):
    Autoscaling.objects.create(service=service, enabled=True)

    client.post(f"/services/{service.pk}/autoscaling/", {**FORM, "enabled": ""})

    assert Autoscaling.objects.get(service=service).enabled is False


@pytest.mark.parametrize(
    "change, message",
    [
        ({"min_nodes": "0"}, "A service keeps at least 1 backend node."),
        ({"target_p95_ms": "0"}, "The target is a response time above 0 ms."),
        ({"min_nodes": "3", "max_nodes": "2"}, "max_nodes is at least min_nodes (3)."),
        ({"max_nodes": "50"}, "your node quota (5) leaves shop at most 5 backend nodes."),
        ({"cooldown_s": "soon"}, "Enter a whole number."),
    ],
)
def test_it_shows_a_refusal_on_its_field_and_stores_nothing(client, service, settings, change, message):
    settings.CONPAAS_QUOTA_NODES = 5

    response = client.post(f"/services/{service.pk}/autoscaling/", {**FORM, **change})

    assert response.status_code == 400
    page = response.content.decode()
    assert f'<p class="field-error" role="alert">{message}</p>' in page
    assert not Autoscaling.objects.exists() and not Event.objects.exists()


def test_another_users_service_is_not_found(client, bob):
    foreign = ServiceFactory(owner=bob)

    assert client.post(f"/services/{foreign.pk}/autoscaling/", FORM).status_code == 404
    assert not Autoscaling.objects.exists()


def test_operators_see_policies_and_kept_metrics_in_the_admin(service):
    Autoscaling.objects.create(service=service, enabled=True, node_capacity=38.5)
    MetricPoint.objects.create(service=service, environment="production", time="2026-01-05T12:00:00Z", requests=9)
    operator = Client()
    operator.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    policies = operator.get("/admin/workflows/autoscaling/").content.decode()
    assert "shop" in policies and "38.5" in policies
    points = operator.get("/admin/routing/metricpoint/")
    assert points.status_code == 200 and "production" in points.content.decode()
    assert operator.get("/admin/routing/metricpoint/add/").status_code == 403, "the workers write them"
