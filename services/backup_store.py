"""Where backups go: the one place that says which S3 location holds a service's backups, and
the one S3 client the control plane uses for them (Redis RDB files, presigned restore URLs).

Two stores (README, Backups and restore). The operator's, configured with CONPAAS_BACKUP_S3_*:
one bucket, one key that every data node holds. Otherwise the platform's own
(services/platform_store.py, run by `manage.py up`): a bucket per service and an identity that
reaches only it, so that a tenant's node holds keys to its own backups alone. Either way each
service keeps its backups under a prefix of its own. PostgreSQL's base backups and WAL are
written there by barman-cloud on the service's node (the agent); Redis snapshots by the workers.
"""

import http.client
from urllib.parse import urlsplit

from django.conf import settings

from conpaas_common.waiting import wait_until
from conpaas_common.wire import STORAGE_REGION
from services import clouds, object_storage, platform_store
from services.errors import ConpaasError
from services.models import Bucket

NOT_CONFIGURED = "backups are not configured: set CONPAAS_BACKUP_S3_* (README, Backups)"
NOT_STARTED = "backups are not available yet: the platform's backup store starts with `manage.py up` (README, Backups)"
# How long a presigned URL for a restore stays valid (the agent downloads at once).
PRESIGN_SECONDS = 3600
# How long a first grant waits for the platform's store (it takes ~4 s to start with `up`).
STORE_START_WAIT = 30


class BackupsNotConfigured(ConpaasError):
    http_status = 409


def configured() -> bool:
    if platform_store.wanted():
        return platform_store.load() is not None
    return bool(settings.CONPAAS_BACKUP_S3_ENDPOINT and settings.CONPAAS_BACKUP_S3_BUCKET)


def require() -> None:
    """BackupsNotConfigured, saying why, when the installation has no backup store (asked
    nothing: for refusing a request at once)."""
    if platform_store.wanted():
        if platform_store.load() is None:
            raise BackupsNotConfigured(NOT_STARTED)
    elif not configured():
        raise BackupsNotConfigured(NOT_CONFIGURED)


def target_for(service) -> dict:
    """The S3 location (backup_wire.md) holding `service`'s backups, with keys for it;
    BackupsNotConfigured when the installation has no backup store. The prefix (and the platform
    store's bucket) is the service's id, not its name: a new service of a deleted one's name never
    finds the old one's backups."""
    require()
    if platform_store.wanted():
        return platform_target(service)
    return {
        "endpoint": settings.CONPAAS_BACKUP_S3_ENDPOINT,
        "bucket": settings.CONPAAS_BACKUP_S3_BUCKET,
        "prefix": f"services/{service.pk}",
        "access_key": settings.CONPAAS_BACKUP_S3_ACCESS_KEY,
        "secret_key": settings.CONPAAS_BACKUP_S3_SECRET_KEY,
        "region": settings.CONPAAS_BACKUP_S3_REGION or "us-east-1",
    }


def bucket_of(service) -> str:
    return f"backups-{service.pk}"


def platform_target(service) -> dict:
    """`service`'s bucket in the platform's store and the identity that reaches it alone, made
    and pushed on the first call (object_storage.grant: the way storage services' buckets are)."""
    store = platform_s3()
    name = bucket_of(service)
    if not Bucket.objects.filter(storage__isnull=True, name=name, granted=True).exists():
        wait_for(store.endpoint)  # before any row: a store that never answers leaves nothing
    granted = object_storage.grant(store, object_storage.bucket_row(None, name, service), None)
    return {
        "endpoint": granted.endpoint,
        "bucket": granted.bucket,
        "prefix": f"services/{service.pk}",
        "access_key": granted.access_key,
        "secret_key": granted.secret_key,
        "region": STORAGE_REGION,
    }


def platform_s3() -> object_storage.Store:
    """The platform's backup store, with its admin identity."""
    config = platform_store.load()
    return object_storage.Store(config.endpoint, config.access_key, config.secret_key, config.master, config.filer)


def wait_for(endpoint: str) -> None:
    """Until the platform's S3 gateway answers with its identities loaded (a request without
    keys refused with 403), as it does from a few seconds after `manage.py up` started it."""
    parts = urlsplit(endpoint)

    def answers() -> bool:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 403
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    try:
        wait_until(answers, timeout=STORE_START_WAIT, interval=0.2, message="the backup store")
    except TimeoutError:
        log = platform_store.directory() / platform_store.LOG
        raise object_storage.StoreError(
            f"the platform's backup store does not answer at {endpoint} (is `manage.py up` running? its log: {log})"
        ) from None


def forget(service) -> str:
    """At `service`'s deletion, every backup of it leaves the store: what is under its prefix (base
    backups and WAL, or RDB snapshots), and in the platform's store its bucket and the identity
    that reached it. Returns what was removed, in words ("" when it had nothing); raises
    StoreError when the store refuses (what stays is then said by the caller)."""
    if not configured():
        return ""
    if platform_store.wanted():
        row = Bucket.objects.filter(storage__isnull=True, name=bucket_of(service)).first()
        if row is None:
            return ""  # never backed up: no bucket was made
        store = platform_s3()
        s3 = store.s3()
        objects, size = _delete_objects(s3, row.name, "")
        try:
            s3.delete_bucket(Bucket=row.name)
        except Exception as exc:  # boto3 raises many types; the store's words are the point
            if "NoSuchBucket" not in str(exc):
                raise object_storage.StoreError(f"deleting bucket {row.name}: {exc}") from None
        object_storage.revoke(store, row)
        row.delete()
    else:
        location = target_for(service)
        objects, size = _delete_objects(client(location), location["bucket"], location["prefix"] + "/")
    return f"{objects} backup file(s), {size:,} bytes, removed from the backup store" if objects else ""


def _delete_objects(s3, bucket: str, prefix: str) -> tuple[int, int]:
    """Every object of `bucket` under `prefix` deleted, 1,000 a request; how many, how many bytes."""
    objects = size = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                objects += len(keys)
                size += sum(item["Size"] for item in page["Contents"])
    except Exception as exc:  # boto3 raises many types; the store's words are the point
        if "NoSuchBucket" in str(exc):
            return objects, size
        raise object_storage.StoreError(f"deleting the backups in {bucket}/{prefix}: {exc}") from None
    return objects, size


def forget_grants() -> int:
    """A new platform store holds no bucket: every service's is pushed again at its next use."""
    return Bucket.objects.filter(storage__isnull=True, granted=True).update(granted=False)


def for_nodes(location: dict) -> dict:
    """`location` as the nodes reach it (an agent's spec): on the local cloud's isolated nodes, a
    store on this host is at the bridge's gateway (services/clouds/local.py ex_store_url)."""
    cloud = clouds.get_cloud(settings.CONPAAS_CLOUD)
    rewrite = getattr(cloud, "ex_store_url", None)
    return {**location, "endpoint": rewrite(location["endpoint"])} if rewrite else location


def client(location: dict):
    """A boto3 S3 client for `location` (path-style addressing: stores on private addresses)."""
    import boto3  # here: importing boto3 costs a quarter second every process would pay
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=location["endpoint"],
        aws_access_key_id=location["access_key"],
        aws_secret_access_key=location["secret_key"],
        region_name=location["region"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


# A snapshot the worker takes and uploads whole, by backup kind (BackupKind): its folder and suffix.
SNAPSHOTS = {"rdb": ("redis", "rdb"), "sql": ("mysql", "sql")}


def snapshot_key(location: dict, backup_id: str, kind: str) -> str:
    folder, suffix = SNAPSHOTS[kind]
    return f"{location['prefix']}/{folder}/{backup_id}.{suffix}"


def ensure_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def upload_snapshot(location: dict, backup_id: str, kind: str, path: str) -> None:
    s3 = client(location)
    ensure_bucket(s3, location["bucket"])
    s3.upload_file(path, location["bucket"], snapshot_key(location, backup_id, kind))


def snapshot_url(location: dict, backup_id: str, kind: str) -> str:
    """A presigned GET URL of the snapshot (an RDB, a SQL dump), for the agent's restore (it holds
    no S3 keys for them), signed for the store's address as the nodes reach it (signing asks the
    store nothing)."""
    params = {"Bucket": location["bucket"], "Key": snapshot_key(location, backup_id, kind)}
    return client(for_nodes(location)).generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)


def delete_snapshot(location: dict, backup_id: str, kind: str) -> None:
    client(location).delete_object(Bucket=location["bucket"], Key=snapshot_key(location, backup_id, kind))
