"""GET/PUT /api/v1/services/{id}/autoscaling/: the policy, its validation (400 naming the field,
nothing stored), and the last decision."""

import pytest

from services.models import Event
from tests.api.conftest import client_for
from tests.factories import NodeFactory, ServiceFactory
from workflows.models import Autoscaling

pytestmark = pytest.mark.django_db

POLICY = {"enabled": True, "target_p95_ms": 250, "min_nodes": 1, "max_nodes": 4, "cooldown_s": 30}


def put(api, service, body):
    return api.put(f"/api/v1/services/{service.pk}/autoscaling/", body, format="json")


def test_it_shows_the_defaults_of_a_service_never_autoscaled(api, service):
    NodeFactory(service=service, is_proxy=True)

    response = api.get(f"/api/v1/services/{service.pk}/autoscaling/")

    assert response.status_code == 200
    assert response.json() == {
        "enabled": False,
        "target_p95_ms": 250,
        "min_nodes": 1,
        "max_nodes": 4,
        "cooldown_s": 30,
        "nodes": 1,
        "last_decision": None,
        "updated": response.json()["updated"],
    }
    assert not Autoscaling.objects.exists(), "reading stores nothing"


def test_it_turns_autoscaling_on_and_records_it(api, service, alice):
    response = put(api, service, POLICY)

    assert response.status_code == 200, response.json()
    assert {k: response.json()[k] for k in POLICY} == POLICY
    policy = Autoscaling.objects.get(service=service)
    assert (policy.enabled, policy.target_p95_ms, policy.max_nodes) == (True, 250, 4)
    event = Event.objects.get(service=service, action="autoscale")
    assert event.message == "autoscaling on: p95 target 250 ms, 1 to 4 backend node(s), cool-down 30 s"
    assert event.actor == alice


def test_a_put_changes_what_it_names_and_keeps_the_rest(api, service):
    put(api, service, {**POLICY, "target_p95_ms": 400, "max_nodes": 3})

    response = put(api, service, {"enabled": False})

    assert response.status_code == 200
    assert response.json()["enabled"] is False
    assert (response.json()["target_p95_ms"], response.json()["max_nodes"]) == (400, 3)
    assert Event.objects.filter(action="autoscale").first().message == "autoscaling off"


def test_it_shows_the_last_decision(api, service):
    decision = {"time": "2026-01-05T12:00:00+00:00", "action": "out", "from_nodes": 1, "nodes": 3, "reason": "r"}
    Autoscaling.objects.create(service=service, enabled=True, last_decision=decision)

    assert api.get(f"/api/v1/services/{service.pk}/autoscaling/").json()["last_decision"] == decision


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"min_nodes": 0}, "min_nodes", "A service keeps at least 1 backend node."),
        ({"target_p95_ms": 0}, "target_p95_ms", "The target is a response time above 0 ms."),
        ({"target_p95_ms": -5}, "target_p95_ms", "The target is a response time above 0 ms."),
        ({"min_nodes": 3, "max_nodes": 2}, "max_nodes", "max_nodes is at least min_nodes (3)."),
        ({"max_nodes": 40}, "max_nodes", "your node quota (5) leaves shop at most 5 backend nodes."),
        ({"cooldown_s": 100000}, "cooldown_s", "A cool-down is at most a day (86400 s)."),
        ({"max_nodes": "many"}, "max_nodes", "A valid integer is required."),
        ({"enabled": "perhaps"}, "enabled", "Must be a valid boolean."),
    ],
)
def test_it_refuses_a_bad_policy_naming_the_field_and_stores_nothing(api, service, settings, change, field, message):
    settings.CONPAAS_QUOTA_NODES = 5

    response = put(api, service, {**POLICY, **change})

    assert response.status_code == 400
    assert message in response.json()[field]
    assert not Autoscaling.objects.exists()
    assert not Event.objects.exists()


def test_the_quota_counts_the_owners_other_services(api, service, alice, settings):
    settings.CONPAAS_QUOTA_NODES = 5
    other = ServiceFactory(owner=alice, backend_nodes=2)
    NodeFactory(service=other, is_proxy=True)

    refused = put(api, service, {**POLICY, "max_nodes": 4})
    assert refused.status_code == 400
    assert refused.json()["max_nodes"] == ["your node quota (5) leaves shop at most 3 backend nodes."]
    assert put(api, service, {**POLICY, "max_nodes": 3}).status_code == 200


def test_another_users_service_is_not_found(service, bob):
    stranger = client_for(bob)

    assert stranger.get(f"/api/v1/services/{service.pk}/autoscaling/").status_code == 404
    assert put(stranger, service, POLICY).status_code == 404
    assert not Autoscaling.objects.exists()
