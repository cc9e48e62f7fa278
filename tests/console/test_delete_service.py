import pytest

from services.models import Link, Operation, Service
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def test_it_asks_for_the_name_before_deleting(client, service):
    page = client.get(f"/services/{service.pk}/delete/")
    assert page.status_code == 200
    assert b"Type <code>shop</code> to confirm" in page.content
    assert b"Linked by" not in page.content and b"Delete anyway" not in page.content

    refused = client.post(f"/services/{service.pk}/delete/", {"confirm_name": "shp"})
    assert refused.status_code == 400
    assert b"That is not the name of this service" in refused.content
    assert Service.objects.get(pk=service.pk).state == "running"
    assert not Operation.objects.filter(kind="delete").exists()


def test_it_deletes_when_the_name_is_typed(client, service):
    response = client.post(f"/services/{service.pk}/delete/", {"confirm_name": "shop"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert Service.objects.get(pk=service.pk).state == "deleting"
    assert Operation.objects.get(service=service, kind="delete").state == "pending"


def test_it_names_the_services_that_link_it_and_deletes_only_when_told_to_anyway(client, alice, service):
    Link.objects.create(service=ServiceFactory(owner=alice, name="site"), target=service)

    page = client.get(f"/services/{service.pk}/delete/")
    assert b"Linked by" in page.content and b">site</a>" in page.content
    assert b"Delete anyway, leaving site with a link to nothing" in page.content

    refused = client.post(f"/services/{service.pk}/delete/", {"confirm_name": "shop"})
    assert refused.status_code == 400
    assert b"shop is linked by site: delete them or unlink it from their manifest first" in refused.content
    assert Service.objects.get(pk=service.pk).state == "running"
    assert not Operation.objects.filter(kind="delete").exists()

    forced = client.post(f"/services/{service.pk}/delete/", {"confirm_name": "shop", "force": "on"})
    assert forced.status_code == 302
    assert Service.objects.get(pk=service.pk).state == "deleting"
    assert Operation.objects.get(service=service, kind="delete").state == "pending"
