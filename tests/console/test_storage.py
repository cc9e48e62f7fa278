"""A storage service's page: its buckets with the counts the workers saved, and the owner's
storage quota; no key on the page, and no call to the store."""

import pytest
from django.test import Client

from services.models import Bucket
from tests.factories import NodeFactory, ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_shows_the_buckets_as_counted_and_the_quota_but_no_key(client, alice, settings):
    settings.CONPAAS_QUOTA_STORAGE_MB = 2048
    files = ServiceFactory(owner=alice, name="files", runtime="storage", password="p" * 32, state="running")
    NodeFactory(service=files, address="10.1.0.9", data_port=20001)
    web = ServiceFactory(owner=alice, name="web")
    Bucket.objects.create(
        storage=files,
        name="web",
        holder=web,
        access_key="CPKEY0000000000000",
        secret_key="s" * 40,
        object_count=1000,
        size=3 << 20,
        granted=True,
    )

    page = client.get(f"/services/{files.pk}/").content.decode()

    assert "<code>web</code>" in page and "1000" in page and "3.0 MB" in page
    assert "Storage used: 3.0 MB of your 2048 MB" in page
    assert "s" * 40 not in page and "p" * 32 not in page
    # A store keeps copies on its nodes: no backups page to link to (it would be a 404).
    assert 'data-testid="backups-link"' not in page


def test_operators_see_buckets_in_the_admin_without_their_secret(alice):
    files = ServiceFactory(owner=alice, name="files", runtime="storage", state="running")
    bucket = Bucket.objects.create(storage=files, name="web", access_key="CPKEY0000000000000", secret_key="s" * 40)
    operator = Client()
    operator.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))

    listed = operator.get("/admin/services/bucket/").content.decode()
    shown = operator.get(f"/admin/services/bucket/{bucket.pk}/change/").content.decode()

    assert "web" in listed and "CPKEY0000000000000" in shown and "s" * 40 not in shown
    assert operator.get("/admin/services/bucket/add/").status_code == 403, "links make them"
