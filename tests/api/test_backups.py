"""The backups calls: the policy, the list with its recovery window, taking one and restoring;
each refusal names its field (400), hides another's service (404) or says the conflict (409),
storing nothing. The work itself is tests/workflows/test_backups.py."""

from datetime import UTC, datetime

import pytest

from services.models import Backup, Operation, Service
from tests.api.conftest import client_for
from tests.factories import NodeFactory, ServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def store(settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = "http://10.9.9.9:8333"
    settings.CONPAAS_BACKUP_S3_BUCKET = "conpaas-backups"
    settings.CONPAAS_BACKUP_S3_SECRET_KEY = "SECRET-KEY"


@pytest.fixture
def database(alice):
    service = ServiceFactory(owner=alice, name="wikidb", runtime="postgresql", password="p" * 32)
    NodeFactory(service=service, data_port=20001)
    return service


def at(minute: int, second: int = 0) -> datetime:
    return datetime(2026, 12, 7, 20, minute, second, tzinfo=UTC)


def base_backup(service, minute: int, **fields) -> Backup:
    fields = {"state": "completed", "verified": True, "size": 1000, **fields}
    return Backup.objects.create(
        service=service, kind="base", backup_id=f"b{minute}", begin_time=at(minute), end_time=at(minute, 5), **fields
    )


def test_the_policy_is_on_by_default_and_a_put_changes_what_it_names(api, database):
    url = f"/api/v1/services/{database.pk}/backups/policy/"
    assert api.get(url).json() == {"enabled": True, "every_hours": 24, "keep_days": 7}
    changed = api.put(url, {"every_hours": 6}, format="json")
    assert changed.status_code == 200
    assert changed.json() == {"enabled": True, "every_hours": 6, "keep_days": 7}


@pytest.mark.parametrize(
    ("body", "field"),
    [({"keep_days": 0}, "keep_days"), ({"every_hours": "x"}, "every_hours"), ({"enabled": 3}, "enabled")],
)
def test_a_bad_policy_names_its_field_and_changes_nothing(api, database, body, field):
    refused = api.put(f"/api/v1/services/{database.pk}/backups/policy/", body, format="json")
    assert refused.status_code == 400 and field in refused.json()
    database.refresh_from_db()
    assert (database.backup_every_hours, database.backup_keep_days) == (24, 7)


def test_the_list_gives_each_backup_and_the_postgresql_recovery_window(api, database):
    base_backup(database, 1)
    base_backup(database, 3)
    Service.objects.filter(pk=database.pk).update(backup_archived_until=at(9))

    listed = api.get(f"/api/v1/services/{database.pk}/backups/").json()

    assert [b["backup_id"] for b in listed] == ["b3", "b1"]
    first = listed[0]
    assert {"id", "created", "size", "state", "verified", "recovery_window"} <= set(first)
    assert first["recovery_window"] == {"from": "2026-12-07T20:01:05Z", "to": "2026-12-07T20:09:00Z"}
    assert first["verified"] is True and first["state"] == "completed"


def test_a_redis_backups_window_is_its_snapshots_moment(api, alice):
    cache = ServiceFactory(owner=alice, name="cache", runtime="redis")
    Backup.objects.create(service=cache, kind="rdb", backup_id="r1", state="completed", end_time=at(4))
    listed = api.get(f"/api/v1/services/{cache.pk}/backups/").json()
    assert listed[0]["recovery_window"] == {"from": "2026-12-07T20:04:00Z", "to": "2026-12-07T20:04:00Z"}


def test_taking_one_answers_202_with_the_operation(api, database):
    taken = api.post(f"/api/v1/services/{database.pk}/backups/")
    assert taken.status_code == 202 and taken.json()["kind"] == "backup"


def test_without_a_store_taking_one_is_a_409_that_says_how_to_configure_it(api, database, settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    refused = api.post(f"/api/v1/services/{database.pk}/backups/")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "backups are not configured: set CONPAAS_BACKUP_S3_* (README, Backups)"
    assert not Operation.objects.exists()


@pytest.mark.parametrize("runtime", ["python", "storage"])
def test_a_web_or_storage_service_has_no_backups_409(api, alice, runtime):
    # A store keeps copies of its objects on its nodes; it is no database to restore.
    web = ServiceFactory(owner=alice, name="web", runtime=runtime)
    for method, url in [
        ("get", f"/api/v1/services/{web.pk}/backups/"),
        ("post", f"/api/v1/services/{web.pk}/backups/"),
        ("get", f"/api/v1/services/{web.pk}/backups/policy/"),
        ("post", f"/api/v1/services/{web.pk}/restore/"),
    ]:
        answer = getattr(api, method)(url, {"backup": 1}, format="json") if method == "post" else api.get(url)
        assert answer.status_code == 409, (method, url)
        assert "only postgresql, redis and mysql have backups" in answer.json()["detail"]


def test_another_users_service_is_a_404_everywhere(database, bob):
    other = client_for(bob)
    for url in ["backups/", "backups/policy/"]:
        assert other.get(f"/api/v1/services/{database.pk}/{url}").status_code == 404
    assert other.post(f"/api/v1/services/{database.pk}/backups/").status_code == 404
    assert other.post(f"/api/v1/services/{database.pk}/restore/", {"backup": 1}, format="json").status_code == 404


def test_a_restore_answers_202_with_the_operation(api, database):
    backup = base_backup(database, 1)
    Service.objects.filter(pk=database.pk).update(backup_archived_until=at(9))
    by_backup = api.post(f"/api/v1/services/{database.pk}/restore/", {"backup": backup.pk}, format="json")
    assert by_backup.status_code == 202 and by_backup.json()["kind"] == "restore"
    by_time = api.post(f"/api/v1/services/{database.pk}/restore/", {"time": "2026-12-07T20:05:00Z"}, format="json")
    assert by_time.status_code == 202
    assert Operation.objects.get(pk=by_time.json()["id"]).params["time"] == "2026-12-07T20:05:00+00:00"


def test_a_restore_into_a_new_service_creates_it(api, database, alice):
    backup = base_backup(database, 1)
    made = api.post(f"/api/v1/services/{database.pk}/restore/", {"backup": backup.pk, "into": "copy"}, format="json")
    assert made.status_code == 202
    assert Service.objects.get(owner=alice, name="copy").runtime == "postgresql"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({}, "backup", "either a backup or a time"),
        ({"backup": "BACKUP", "time": "2026-12-07T20:05:00Z"}, "backup", "not both"),
        ({"backup": 999}, "backup", "no completed backup 999"),
        ({"time": "2026-12-07T21:00:00Z"}, "time", "outside the recovery window"),
        ({"time": "yesterday"}, "time", "Datetime"),
        ({"backup": "BACKUP", "into": "wikidb"}, "into", "already have a service named wikidb"),
        ({"backup": "BACKUP", "into": "Bad Name"}, "into", "lowercase"),
    ],
)
def test_a_bad_restore_names_its_field_and_stores_nothing(api, database, body, field, words):
    backup = base_backup(database, 1)
    Service.objects.filter(pk=database.pk).update(backup_archived_until=at(9))
    body = {k: backup.pk if v == "BACKUP" else v for k, v in body.items()}
    services = Service.objects.count()

    refused = api.post(f"/api/v1/services/{database.pk}/restore/", body, format="json")

    assert refused.status_code == 400, refused.json()
    assert words in str(refused.json()[field])
    assert not Operation.objects.exists() and Service.objects.count() == services


def test_a_redis_restore_to_a_time_is_a_400(api, alice):
    cache = ServiceFactory(owner=alice, name="cache", runtime="redis")
    refused = api.post(f"/api/v1/services/{cache.pk}/restore/", {"time": "2026-12-07T20:05:00Z"}, format="json")
    assert refused.status_code == 400 and "restores only a backup" in str(refused.json()["time"])


def test_the_service_says_its_backup_problem(api, database):
    Service.objects.filter(pk=database.pk).update(backup_problem="backup failed: disk full")
    assert api.get(f"/api/v1/services/{database.pk}/").json()["backup_problem"] == "backup failed: disk full"
    listed = api.get("/api/v1/services/").json()
    assert listed[0]["backup_problem"] == "backup failed: disk full"
