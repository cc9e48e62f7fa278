"""Where a service's backups go (services/backup_store.py: target_for): the operator's store, one
bucket and key for all; or the platform's own (services/platform_store.py), a bucket per service
and an identity that reaches only it, here a real `weed server` started by `manage.py up`'s own
starter; or none, saying why, storing nothing."""

import os
import signal
import socket
import subprocess

import pytest
from botocore.exceptions import ClientError
from django.core.management.base import CommandError

from conpaas_common.procs import pid_alive
from services import backup_store, platform_store
from services.backup_store import NOT_STARTED, BackupsNotConfigured
from services.models import Bucket, Event
from services.object_storage import StoreError
from tests.factories import ServiceFactory
from workflows.management.commands.up import Command as Up


@pytest.fixture
def own_store(settings, tmp_path):
    """The platform's store wanted, in a home of the test's own, not started."""
    settings.CONPAAS_HOME = tmp_path
    settings.CONPAAS_BACKUP_STORE = "on"
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    return tmp_path


@pytest.fixture
def running_store(own_store):
    """The platform's store as `manage.py up` runs it; killed by its PID when the test ends."""
    argv = Up().prepare_backup_store()
    with open(platform_store.directory() / platform_store.LOG, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=log, process_group=0)
    try:
        yield platform_store.load()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not pid_alive(process.pid)


def s3(location: dict):
    """A client as the control plane makes them, with `location`'s keys."""
    return backup_store.client(location)


def test_with_an_operators_store_every_service_gets_its_bucket_and_key(db, settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = "http://10.9.9.9:8333"
    settings.CONPAAS_BACKUP_S3_BUCKET = "conpaas-backups"
    settings.CONPAAS_BACKUP_S3_ACCESS_KEY, settings.CONPAAS_BACKUP_S3_SECRET_KEY = "AK", "SECRET-KEY"
    settings.CONPAAS_BACKUP_STORE = "on"  # the operator's store wins: the platform runs none
    service = ServiceFactory(runtime="postgresql")

    assert backup_store.target_for(service) == {
        "endpoint": "http://10.9.9.9:8333",
        "bucket": "conpaas-backups",
        "prefix": f"services/{service.pk}",
        "access_key": "AK",
        "secret_key": "SECRET-KEY",
        "region": "us-east-1",
    }
    assert not platform_store.wanted() and platform_store.endpoint() == "http://10.9.9.9:8333"
    assert not Bucket.objects.exists()


def test_with_the_store_off_and_no_operators_there_are_no_backups(db, settings):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = ""
    settings.CONPAAS_BACKUP_STORE = "off"
    with pytest.raises(BackupsNotConfigured, match=r"^backups are not configured: set CONPAAS_BACKUP_S3_\*"):
        backup_store.target_for(ServiceFactory(runtime="postgresql"))
    assert not backup_store.configured() and platform_store.endpoint() == ""
    assert Up().prepare_backup_store() is None, "up runs no store"
    assert not Bucket.objects.exists()


def test_before_up_made_the_platforms_store_a_backup_says_so(db, own_store):
    with pytest.raises(BackupsNotConfigured, match="^" + NOT_STARTED.replace("(", r"\(").replace(")", r"\)")):
        backup_store.target_for(ServiceFactory(runtime="postgresql"))
    assert not backup_store.configured() and platform_store.endpoint() == ""
    assert not Bucket.objects.exists()


def test_a_platforms_store_that_does_not_answer_grants_nothing(db, own_store, monkeypatch):
    config, made = platform_store.prepare()
    assert made and backup_store.configured()
    monkeypatch.setattr(backup_store, "STORE_START_WAIT", 0.3)
    with pytest.raises(StoreError, match=rf"backup store does not answer at {config.endpoint} \(is `manage.py up`"):
        backup_store.target_for(ServiceFactory(runtime="postgresql"))
    assert not Bucket.objects.exists()


def test_the_platforms_store_gives_each_service_a_bucket_only_its_key_reaches(db, running_store):
    config = running_store
    alpha, beta = ServiceFactory(runtime="postgresql"), ServiceFactory(runtime="redis")

    a, b = backup_store.target_for(alpha), backup_store.target_for(beta)

    assert (a["endpoint"], a["bucket"], a["prefix"]) == (config.endpoint, f"backups-{alpha.pk}", f"services/{alpha.pk}")
    assert b["bucket"] == f"backups-{beta.pk}" and a["access_key"] != b["access_key"]
    assert config.access_key not in (a["access_key"], b["access_key"]), "no node holds the admin key"
    rows = Bucket.objects.filter(storage__isnull=True)
    assert sorted(rows.values_list("holder", "granted")) == [(alpha.pk, True), (beta.pk, True)]
    assert backup_store.target_for(alpha) == a, "the same keys, again"

    s3(a).put_object(Bucket=a["bucket"], Key=f"{a['prefix']}/base", Body=b"alpha's backup")
    s3(b).put_object(Bucket=b["bucket"], Key=f"{b['prefix']}/base", Body=b"beta's backup")
    assert s3(a).get_object(Bucket=a["bucket"], Key=f"{a['prefix']}/base")["Body"].read() == b"alpha's backup"
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(a).get_object(Bucket=b["bucket"], Key=f"{b['prefix']}/base")
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(a).list_objects_v2(Bucket=b["bucket"])
    with pytest.raises(ClientError, match="AccessDenied"):
        s3(a).put_object(Bucket=b["bucket"], Key="intruder", Body=b"x")

    said = str(list(Event.objects.values_list("message", flat=True)))
    said += (platform_store.directory() / platform_store.LOG).read_text()
    assert a["secret_key"] not in said and b["secret_key"] not in said
    assert oct(os.stat(platform_store.directory() / platform_store.CONFIG).st_mode & 0o777) == "0o600"
    assert oct(os.stat(platform_store.directory() / platform_store.ADMIN_IDENTITY).st_mode & 0o777) == "0o600"


def test_a_deleted_service_takes_its_bucket_and_its_key_out_of_the_platforms_store(db, running_store):
    alpha, beta = ServiceFactory(runtime="postgresql"), ServiceFactory(runtime="postgresql")
    a, b = backup_store.target_for(alpha), backup_store.target_for(beta)
    for key in ("base/data.tar", "wals/000000010000000000000001.gz"):
        s3(a).put_object(Bucket=a["bucket"], Key=f"{a['prefix']}/{key}", Body=b"alpha")
    s3(b).put_object(Bucket=b["bucket"], Key=f"{b['prefix']}/base", Body=b"beta")

    assert backup_store.forget(alpha) == "2 backup file(s), 10 bytes, removed from the backup store"

    admin = s3({**a, "access_key": running_store.access_key, "secret_key": running_store.secret_key})
    with pytest.raises(ClientError, match="NoSuchBucket|Not Found|404"):
        admin.head_bucket(Bucket=a["bucket"])
    with pytest.raises(ClientError):  # its key is no identity of the store any more
        s3(a).list_objects_v2(Bucket=b["bucket"])
    assert list(Bucket.objects.filter(storage__isnull=True).values_list("holder", flat=True)) == [beta.pk]
    assert s3(b).get_object(Bucket=b["bucket"], Key=f"{b['prefix']}/base")["Body"].read() == b"beta"
    assert backup_store.forget(alpha) == "", "nothing left: nothing to say"


def test_a_deleted_service_takes_its_prefix_out_of_the_operators_store(db, settings, s3_store):
    s3_store.client().create_bucket(Bucket="backups")
    settings.CONPAAS_BACKUP_STORE = "off"
    settings.CONPAAS_BACKUP_S3_ENDPOINT, settings.CONPAAS_BACKUP_S3_BUCKET = s3_store.endpoint, "backups"
    settings.CONPAAS_BACKUP_S3_ACCESS_KEY = s3_store.access_key
    settings.CONPAAS_BACKUP_S3_SECRET_KEY = s3_store.secret_key
    alpha, beta = ServiceFactory(runtime="redis"), ServiceFactory(runtime="redis")
    client = s3_store.client()
    for service in (alpha, beta):
        client.put_object(Bucket="backups", Key=f"services/{service.pk}/redis/1.rdb", Body=b"snapshot")
    # A prefix is not a name's beginning: services/1 is not services/10's.
    client.put_object(Bucket="backups", Key=f"services/{alpha.pk}0/redis/1.rdb", Body=b"other")

    assert backup_store.forget(alpha) == "1 backup file(s), 8 bytes, removed from the backup store"
    left = [item["Key"] for item in client.list_objects_v2(Bucket="backups")["Contents"]]
    assert sorted(left) == sorted([f"services/{beta.pk}/redis/1.rdb", f"services/{alpha.pk}0/redis/1.rdb"])


def test_up_refuses_to_start_a_store_whose_port_is_taken_or_whose_weed_is_not_the_pinned_one(db, own_store, settings):
    config, _ = platform_store.prepare()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((platform_store.HOST, config.ports["s3"]))
        taken.listen()
        with pytest.raises(CommandError, match=rf"the backup store's port\(s\) {config.ports['s3']} \(kept in "):
            Up().prepare_backup_store()
    assert platform_store.load() == config, "the ports stay: nodes archive to them"

    fake = own_store / "weed"
    fake.write_text("#!/bin/sh\n")
    settings.CONPAAS_WEED = str(fake)
    with pytest.raises(CommandError, match=r"the backup store cannot run: .* sha256 .* CONPAAS_BACKUP_STORE=off"):
        Up().prepare_backup_store()


def test_a_new_platforms_store_has_every_bucket_pushed_again(db, own_store):
    service = ServiceFactory(runtime="postgresql")
    Bucket.objects.create(storage=None, name=f"backups-{service.pk}", holder=service, access_key="K", granted=True)
    Up().prepare_backup_store()  # a home without the store's configuration: a new, empty store
    assert not Bucket.objects.get().granted
    Bucket.objects.update(granted=True)
    Up().prepare_backup_store()
    assert Bucket.objects.get().granted, "the same store: its identities are still there"
