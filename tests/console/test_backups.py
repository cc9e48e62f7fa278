"""A data service's backups page: the list with verified marks (red when failed or unverified),
the policy form, taking one now and the restore form; the service page links it and shows the
backup problem in red."""

from datetime import UTC, datetime

import pytest
from django.test import Client

from services.models import Backup, Operation, Service
from tests.factories import ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def store(settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = "http://10.9.9.9:8333"
    settings.CONPAAS_BACKUP_S3_BUCKET = "conpaas-backups"


@pytest.fixture
def database(alice):
    return ServiceFactory(owner=alice, name="wikidb", runtime="postgresql", password="p" * 32)


def backup(service, verified, state="completed", **fields):
    end = datetime(2026, 12, 7, 20, 1, tzinfo=UTC)
    return Backup.objects.create(
        service=service, kind="base", backup_id="b1", state=state, verified=verified, end_time=end, **fields
    )


def test_the_service_page_links_the_backups_and_says_the_problem_in_red(client, database):
    Service.objects.filter(pk=database.pk).update(backup_problem="backup b1 could not be verified: no rows")
    page = client.get(f"/services/{database.pk}/").content.decode()
    assert f'href="/services/{database.pk}/backups/"' in page
    assert 'class="error" role="alert" data-testid="backup-problem"' in page
    assert "backup b1 could not be verified: no rows" in page


def test_the_list_marks_verified_and_unverified_backups(client, database):
    backup(database, True, verification="restored on n1: 2 tables, 10 rows", size=2048)
    backup(database, False, verification="restored on n2: relation is corrupt")
    backup(database, None, state="failed", error="barman-cloud-backup: disk full")

    page = client.get(f"/services/{database.pk}/backups/").content.decode()

    assert page.count('class="badge ok">verified') == 1
    assert page.count('class="badge bad">not verified') == 2
    assert "relation is corrupt" in page and "disk full" in page and "2.0\xa0KB" in page
    assert "Restorable to any moment from" in page
    assert database.password not in page


def test_the_policy_form_saves_and_refuses_by_field(client, database):
    saved = client.post(f"/services/{database.pk}/backups/policy/", {"enabled": "on", "every_hours": 6, "keep_days": 3})
    assert saved.status_code == 302
    database.refresh_from_db()
    assert (database.backup_every_hours, database.backup_keep_days) == (6, 3)
    refused = client.post(f"/services/{database.pk}/backups/policy/", {"every_hours": 6, "keep_days": 0})
    assert refused.status_code == 400 and "greater than or equal to 1" in refused.content.decode()
    database.refresh_from_db()
    assert (database.backup_enabled, database.backup_keep_days) == (True, 3)


def test_take_one_now_starts_a_backup(client, database):
    response = client.post(f"/services/{database.pk}/backups/take/")
    assert response.status_code == 302
    assert Operation.objects.get(service=database).kind == "backup"


def test_take_one_without_a_store_says_how_to_configure_it(client, database, settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    page = client.post(f"/services/{database.pk}/backups/take/", follow=True).content.decode()
    assert "backups are not configured: set CONPAAS_BACKUP_S3_*" in page
    assert not Operation.objects.exists()


def test_the_restore_form_starts_a_restore_and_refuses_by_field(client, database):
    kept = backup(database, True)
    confirmed = {"confirm_name": database.name}
    refused = client.post(f"/services/{database.pk}/restore/", {"backup": 999, **confirmed})
    assert refused.status_code == 400 and "no completed backup 999" in refused.content.decode()
    neither = client.post(f"/services/{database.pk}/restore/", confirmed)
    assert neither.status_code == 400 and "either a backup or a time" in neither.content.decode()
    unconfirmed = client.post(f"/services/{database.pk}/restore/", {"backup": kept.pk, "confirm_name": "sho"})
    assert unconfirmed.status_code == 400
    assert f"replaces the data of {database.name}: type {database.name}" in unconfirmed.content.decode()
    assert not Operation.objects.exists()
    started = client.post(f"/services/{database.pk}/restore/", {"backup": kept.pk, **confirmed})
    assert started.status_code == 302 and Operation.objects.get().kind == "restore"


def test_a_restore_into_a_new_service_needs_no_name_typed(client, database):
    kept = backup(database, True)
    started = client.post(f"/services/{database.pk}/restore/", {"backup": kept.pk, "into": "copy"})
    assert started.status_code == 302 and Operation.objects.get(kind="restore").service.name == "copy"


def test_a_web_service_has_no_backups_page_and_others_see_nothing(client, alice, database):
    web = ServiceFactory(owner=alice, name="web")
    assert client.get(f"/services/{web.pk}/backups/").status_code == 404
    other = Client()
    other.force_login(UserFactory(username="mallory"))
    assert other.get(f"/services/{database.pk}/backups/").status_code == 404
    assert other.post(f"/services/{database.pk}/backups/take/").status_code == 404
