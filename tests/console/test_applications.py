import pytest

from services.models import Application, Operation, Service
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def application(alice):
    application = Application.objects.create(owner=alice, name="wiki")
    ServiceFactory(owner=alice, name="web", application=application)
    ServiceFactory(owner=alice, name="db", application=application)
    return application


def test_it_lists_the_users_applications_with_their_services(client, application, bob):
    Application.objects.create(owner=bob, name="bobs")

    page = client.get("/applications/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "<td>wiki</td>" in html and ">web</a>" in html and ">db</a>" in html
    assert "bobs" not in html


def test_it_asks_for_the_name_before_deleting(client, application):
    refused = client.post(f"/applications/{application.pk}/delete/", {"confirm_name": "wik"})

    assert refused.status_code == 400
    assert b"That is not the name of this application" in refused.content
    assert Application.objects.exists() and not Operation.objects.exists()


def test_it_deletes_the_application_and_its_services(client, application):
    page = client.get(f"/applications/{application.pk}/delete/")
    assert b"Type <code>wiki</code> to confirm" in page.content

    response = client.post(f"/applications/{application.pk}/delete/", {"confirm_name": "wiki"})

    assert response.status_code == 302 and response["Location"] == "/applications/"
    assert not Application.objects.exists()
    assert set(Service.objects.values_list("state", flat=True)) == {"deleting"}
    assert Operation.objects.filter(kind="delete").count() == 2


def test_another_users_application_is_not_found(client, bob):
    other = Application.objects.create(owner=bob, name="bobs")

    assert client.post(f"/applications/{other.pk}/delete/", {"confirm_name": "bobs"}).status_code == 404
    assert Application.objects.filter(pk=other.pk).exists()
