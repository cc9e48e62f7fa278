"""The console shows a quota refusal in place, with the API's 403, and stores nothing."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from services.models import Quota, Service
from tests.apps import label_app
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_it_shows_the_services_quota_on_the_create_page(client, service, settings):
    settings.CONPAAS_QUOTA_SERVICES = 1
    response = client.post("/services/new/", {"name": "fresh", "runtime": "python"})
    assert response.status_code == 403
    assert "quota exceeded: services (1)" in response.content.decode()
    assert not Service.objects.filter(name="fresh").exists()


def test_it_shows_the_environments_quota_in_place(client, service, settings):
    settings.CONPAAS_QUOTA_ENVIRONMENTS = 2
    response = client.post(f"/services/{service.pk}/environments/", {"name": "staging"})
    assert response.status_code == 403
    assert "quota exceeded: environments (2)" in response.content.decode()
    assert service.environments.count() == 2


def test_it_answers_the_upload_script_with_the_storage_quota(client, service, settings, _isolated_archives):
    settings.CONPAAS_QUOTA_STORAGE_MB = 0
    archive = SimpleUploadedFile("app.zip", label_app("1"))
    response = client.post(f"/services/{service.pk}/versions/", {"archive": archive}, HTTP_ACCEPT="application/json")
    assert response.status_code == 403
    assert response.json()["error"].startswith("Upload refused: quota exceeded: storage_mb (0)")
    assert not service.versions.exists() and list(_isolated_archives.iterdir()) == []


def test_operators_set_a_users_quotas_on_the_user_page(client, alice):
    operator = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(operator)
    page = client.get(f"/admin/auth/user/{alice.pk}/change/")
    assert page.status_code == 200 and "quota-0-nodes" in page.content.decode()
    quota = Quota.objects.create(user=alice, nodes=3)
    listing = client.get("/admin/services/quota/").content.decode()
    assert f'href="/admin/services/quota/{quota.pk}/change/"' in listing
