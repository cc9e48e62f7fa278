import pytest

from services.choices import ServiceState
from tests.factories import CodeVersionFactory, ServiceFactory

pytestmark = pytest.mark.django_db


def test_it_lists_my_services_with_runtime_state_and_versions(client, service):
    version = CodeVersionFactory(service=service, label="v7")
    service.environments.filter(name="production").update(version=version)

    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="/services/{service.pk}/"' in page
    assert "Python (WSGI)" in page and "running" in page
    assert "v7" in page
    assert "starting…" in page, "a service without a running proxy has no URL yet"


def test_it_shows_no_other_users_service(client, bob):
    ServiceFactory(owner=bob, name="bobs-secret")
    page = client.get("/").content.decode()
    assert "bobs-secret" not in page
    assert "You have no services yet" in page


def test_it_polls_only_while_a_service_is_changing(client, service):
    assert b"every 2s" not in client.get("/").content
    service.state = ServiceState.CREATING
    service.save()
    assert b"every 2s" in client.get("/").content
    assert b'id="service-list"' in client.get("/services/list/").content
