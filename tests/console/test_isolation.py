"""A user never sees or reaches another user's service in the console."""

import pytest

from services.models import Operation, Service
from tests.factories import CodeVersionFactory, ServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def bobs(bob):
    service = ServiceFactory(owner=bob, name="bobs-shop")
    return service, CodeVersionFactory(service=service, label="v1")


PAGES = [
    "/services/{s}/",
    "/services/{s}/overview/",
    "/services/{s}/activity/",
    "/services/{s}/delete/",
    "/services/{s}/swap/?environment=development",
    "/services/{s}/swap/done/?environment=development",
    "/services/{s}/environments/development/settings/",
]
ACTIONS = [
    ("/services/{s}/delete/", {"confirm_name": "bobs-shop"}),
    ("/services/{s}/versions/", {}),
    ("/services/{s}/versions/{v}/delete/", {}),
    ("/services/{s}/environments/", {"name": "staging"}),
    ("/services/{s}/environments/production/deploy/", {"version": "{v}"}),
    ("/services/{s}/swap/", {"environment": "development"}),
    ("/services/{s}/environments/development/settings/", {"travelling": "GREETING=hi"}),
    ("/services/{s}/environments/development/delete/", {}),
]


@pytest.mark.parametrize("page", PAGES)
def test_another_users_service_pages_are_404(client, bobs, page):
    service, version = bobs
    assert client.get(page.format(s=service.pk, v=version.pk)).status_code == 404


@pytest.mark.parametrize(("action", "data"), ACTIONS)
def test_another_users_service_actions_are_404_and_change_nothing(client, bobs, action, data):
    service, version = bobs
    data = {key: value.format(v=version.pk) for key, value in data.items()}
    assert client.post(action.format(s=service.pk, v=version.pk), data).status_code == 404
    service.refresh_from_db()
    assert service.state == "running"
    assert service.versions.count() == 1
    assert service.environments.count() == 2
    assert not any(env.settings for env in service.environments.all())
    assert not Operation.objects.exists()


def test_staff_see_every_service(client, alice, bobs):
    alice.is_staff = True
    alice.save()
    assert b"bobs-shop" in client.get("/").content
    assert client.get(f"/services/{bobs[0].pk}/").status_code == 200
    assert Service.objects.count() == 1
