"""A storage service's HTTP answers: its admin keys for its owner alone, a scale-out accepted, a
shrink refused with nothing stored and no operation."""

import pytest

from services.models import Operation, Service
from tests.api.conftest import client_for
from tests.factories import NodeFactory, ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


def storage_service(owner):
    service = ServiceFactory(owner=owner, name="files", runtime="storage", password="p" * 32, state="running")
    NodeFactory(service=service, address="10.1.0.9", data_port=20001, data_details={"master": "m", "filer": "f"})
    return service


def test_the_owner_reads_the_admin_keys_staff_are_refused_and_others_find_nothing(api, alice, bob):
    files = storage_service(alice)

    creds = api.get(f"/api/v1/services/{files.pk}/credentials/").json()

    assert creds == {"url": "http://10.1.0.9:20001", "access_key": f"CPADMIN{files.pk:013d}", "secret_key": "p" * 32}
    staff = client_for(UserFactory(username="staffer", is_staff=True))
    refused = staff.get(f"/api/v1/services/{files.pk}/credentials/")
    assert refused.status_code == 403 and "only the owner of files" in refused.json()["detail"]
    assert client_for(bob).get(f"/api/v1/services/{files.pk}/credentials/").status_code == 404
    shown = api.get(f"/api/v1/services/{files.pk}/").json()
    assert shown["url"] == "http://10.1.0.9:20001" and "p" * 32 not in str(shown)


def test_a_store_scales_out_but_does_not_shrink(api, alice):
    files = storage_service(alice)

    accepted = api.post(f"/api/v1/services/{files.pk}/scale/", {"role": "backend", "nodes": 2}, format="json")
    assert accepted.status_code == 202, accepted.content
    assert Service.objects.get(pk=files.pk).backend_nodes == 2
    Operation.objects.all().delete()
    Service.objects.filter(pk=files.pk).update(locked_by=None)

    NodeFactory(service=files, address="10.1.0.10")
    refused = api.post(f"/api/v1/services/{files.pk}/scale/", {"role": "backend", "nodes": 1}, format="json")
    assert refused.status_code == 409 and "does not shrink" in refused.json()["detail"]
    assert not Operation.objects.exists()
