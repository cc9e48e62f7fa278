import pytest

from services.models import Operation, Service

pytestmark = pytest.mark.django_db


def test_it_asks_for_the_name_before_deleting(client, service):
    page = client.get(f"/services/{service.pk}/delete/")
    assert page.status_code == 200
    assert b"Type <code>shop</code> to confirm" in page.content

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
