"""Backups in the platform's own store (services/platform_store.py), against the fake agent and the
in-memory store: a database's node gets a bucket and keys of its own service alone, and neither
unlinking nor deleting the service touches them (they are not a storage link's)."""

import pytest

from services import backup_store, platform_store
from services.choices import OperationState
from services.models import Bucket, Operation, Service
from tests.factories import ServiceFactory
from workflows import backups, lifecycle
from workflows.links import set_links


@pytest.fixture(autouse=True)
def platform(settings, tmp_path, store, monkeypatch):
    """The platform's store made (as `manage.py up` makes it) and answering: the in-memory one."""
    settings.CONPAAS_HOME = tmp_path
    settings.CONPAAS_BACKUP_STORE = "on"
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    monkeypatch.setattr(backup_store, "wait_for", lambda endpoint: None)
    return platform_store.prepare()[0]


def create(alice, queue, name):
    made = {}

    def request():
        made["service"], operation = lifecycle.create(alice, name, "postgresql")
        return operation

    assert queue.start(request).state == OperationState.SUCCEEDED
    return made["service"]


def test_each_database_archives_to_its_own_bucket_with_keys_for_it_alone(alice, fleet, queue, store, platform):
    wiki = create(alice, queue, "wikidb")
    wiki_archive = fleet.specs["server"]["backup"]
    shop = create(alice, queue, "shopdb")
    shop_archive = fleet.specs["server"]["backup"]

    assert (wiki_archive["endpoint"], wiki_archive["bucket"]) == (platform.endpoint, f"backups-{wiki.pk}")
    assert (shop_archive["endpoint"], shop_archive["bucket"]) == (platform.endpoint, f"backups-{shop.pk}")
    assert wiki_archive["prefix"] == f"services/{wiki.pk}"
    assert store.identities == {
        wiki_archive["access_key"]: f"backups-{wiki.pk}",
        shop_archive["access_key"]: f"backups-{shop.pk}",
    }
    assert platform.access_key not in store.identities, "no node holds the admin key"
    assert not [s for s in store.scripts if "s3.bucket.quota" in s], "backups count against the quota elsewhere"


def test_unlinking_or_deleting_a_database_leaves_its_backups_bucket_and_keys(alice, queue, store):
    wiki = create(alice, queue, "wikidb")
    web = ServiceFactory(owner=alice, name="web")
    set_links(web, [wiki], alice)

    set_links(wiki, [], alice)
    operation = queue.start(lambda: lifecycle.request_delete(wiki, alice, force=True))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert not Service.objects.filter(pk=wiki.pk).exists()
    row = Bucket.objects.get(storage__isnull=True)
    assert (row.name, row.granted, row.holder) == (f"backups-{wiki.pk}", True, None)
    assert store.identities == {row.access_key: row.name}
    assert not Operation.objects.filter(state=OperationState.FAILED).exists()


def test_asking_for_a_backup_asks_the_store_nothing_the_worker_makes_the_bucket(alice, queue, store):
    cache = ServiceFactory(owner=alice, name="cache", runtime="redis", state="running")

    operation = backups.request_backup(cache, alice)

    assert operation.kind == "backup" and store.scripts == [] and not Bucket.objects.exists()
