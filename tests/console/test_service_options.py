"""The service page's options form: the health check (and a java service's heap), by the same
rules as the API (workflows.lifecycle.update), each refusal on its field with nothing stored."""

import pytest

from services.models import Event
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def test_the_service_page_shows_the_health_check(client, service):
    service.health_check_path, service.health_check_status = "/healthz", 204
    service.save()

    page = client.get(f"/services/{service.pk}/").content.decode()

    assert '<h2 id="options-title">Options</h2>' in page
    assert "Health check now: <code>GET /healthz answering 204</code>" in page
    assert 'name="health_check_path" value="/healthz"' in page and 'name="health_check_status" value="204"' in page
    assert 'name="java_heap_mb"' not in page, "only java services run a JVM"


def test_it_changes_the_health_check(client, service, alice):
    response = client.post(
        f"/services/{service.pk}/options/", {"health_check_path": "/up", "health_check_status": "200"}
    )

    assert response.status_code == 302 and response["Location"].endswith(f"/services/{service.pk}/#options")
    service.refresh_from_db()
    assert (service.health_check_path, service.health_check_status) == ("/up", 200)
    assert Event.objects.get(action="service.update").actor == alice

    # An empty status: any status below 500 again.
    client.post(f"/services/{service.pk}/options/", {"health_check_path": "/up", "health_check_status": ""})
    service.refresh_from_db()
    assert service.health_check_status is None


def test_a_java_service_shows_and_changes_its_heap(client, alice):
    service = ServiceFactory(owner=alice, name="shop", runtime="java")
    assert 'name="java_heap_mb" value="256"' in client.get(f"/services/{service.pk}/").content.decode()

    client.post(f"/services/{service.pk}/options/", {"health_check_path": "/", "java_heap_mb": "512"})

    service.refresh_from_db()
    assert service.java_heap_mb == 512


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"health_check_path": "up"}, "must be a path starting with / without spaces or quotes"),
        ({"health_check_path": "/a b"}, "must be a path starting with / without spaces or quotes"),
        ({"health_check_path": "/", "health_check_status": "404"}, "must be one status from 200 to 399"),
        ({"health_check_path": "/", "health_check_status": "ok"}, "Enter a whole number."),
    ],
)
def test_it_refuses_a_bad_health_check_on_its_field_and_stores_nothing(client, service, form, message):
    response = client.post(f"/services/{service.pk}/options/", form)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert "Health check now: <code>GET / answering any status below 500</code>" in response.content.decode()
    service.refresh_from_db()
    assert (service.health_check_path, service.health_check_status) == ("/", None)
    assert not Event.objects.filter(action="service.update").exists()


def test_a_data_service_has_no_options(client, alice):
    service = ServiceFactory(owner=alice, name="db", runtime="postgresql")
    assert 'id="options"' not in client.get(f"/services/{service.pk}/").content.decode()
    assert client.post(f"/services/{service.pk}/options/", {"health_check_path": "/x"}).status_code == 404
