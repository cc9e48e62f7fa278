"""A service's health check through the API: its path and expected status, on create and PATCH."""

import pytest

from services.models import Event, Service
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def test_a_service_starts_with_the_default_health_check(api, service):
    body = api.get(f"/api/v1/services/{service.pk}/").json()
    assert (body["health_check_path"], body["health_check_status"]) == ("/", None)
    listed = api.get("/api/v1/services/").json()[0]
    assert (listed["health_check_path"], listed["health_check_status"]) == ("/", None)


def test_it_takes_a_health_check_on_create(api):
    response = api.post(
        "/api/v1/services/",
        {"name": "shop", "runtime": "php", "health_check_path": "/healthz", "health_check_status": 204},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert (response.json()["health_check_path"], response.json()["health_check_status"]) == ("/healthz", 204)
    service = Service.objects.get()
    assert (service.health_check_path, service.health_check_status) == ("/healthz", 204)


def test_it_changes_the_health_check(api, alice, service):
    response = api.patch(
        f"/api/v1/services/{service.pk}/",
        {"health_check_path": "/healthz?deep=1", "health_check_status": 200},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert (response.json()["health_check_path"], response.json()["health_check_status"]) == ("/healthz?deep=1", 200)
    event = Event.objects.get(service=service, action="service.update")
    assert event.message == (
        "health check set to GET /healthz?deep=1 answering 200 (was GET / answering any status below 500)"
    )
    assert event.actor == alice

    # null: back to any status below 500; the path given alone keeps the rest.
    response = api.patch(f"/api/v1/services/{service.pk}/", {"health_check_status": None}, format="json")
    assert response.status_code == 200, response.json()
    service.refresh_from_db()
    assert (service.health_check_path, service.health_check_status) == ("/healthz?deep=1", None)


def test_the_same_health_check_again_changes_nothing(api, service):
    response = api.patch(f"/api/v1/services/{service.pk}/", {"health_check_path": "/"}, format="json")
    assert response.status_code == 200, response.json()
    assert not Event.objects.filter(action="service.update").exists()


@pytest.mark.parametrize(
    ("runtime", "body", "field", "message"),
    [
        ("python", {"health_check_path": "healthz"}, "health_check_path", "a path starting with /"),
        ("python", {"health_check_path": "/a b"}, "health_check_path", "without spaces or quotes"),
        ("python", {"health_check_path": '/a"b'}, "health_check_path", "without spaces or quotes"),
        ("python", {"health_check_path": "/ok\nx"}, "health_check_path", "without spaces or quotes"),
        ("python", {"health_check_path": ""}, "health_check_path", "may not be blank"),
        ("python", {"health_check_path": "/" + "a" * 300}, "health_check_path", "no more than 200"),
        ("python", {"health_check_status": 404}, "health_check_status", "one status from 200 to 399"),
        ("python", {"health_check_status": 199}, "health_check_status", "one status from 200 to 399"),
        ("python", {"health_check_status": "ok"}, "health_check_status", "A valid integer is required."),
        ("python", {"health_check_path": "/ok", "health_check_status": 500}, "health_check_status", "200 to 399"),
        ("postgresql", {"health_check_path": "/ok"}, "health_check_path", "has no router"),
        ("redis", {"health_check_status": 200}, "health_check_status", "has no router"),
    ],
)
def test_it_refuses_a_bad_health_check_and_stores_nothing(api, alice, runtime, body, field, message):
    service = ServiceFactory(owner=alice, name="shop", runtime=runtime)
    response = api.patch(f"/api/v1/services/{service.pk}/", body, format="json")
    assert response.status_code == 400
    assert message in " ".join(response.json()[field]), response.json()
    service.refresh_from_db()
    assert (service.health_check_path, service.health_check_status) == ("/", None)
    assert not Event.objects.filter(action="service.update").exists()


def test_it_refuses_a_bad_health_check_on_create(api):
    response = api.post(
        "/api/v1/services/", {"name": "shop", "runtime": "python", "health_check_status": 302.5}, format="json"
    )
    assert response.status_code == 400 and "health_check_status" in response.json()
    assert not Service.objects.exists()
