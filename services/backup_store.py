"""Where backups go: the one place that says which S3 location holds a service's backups, and
the one S3 client the control plane uses for them (Redis RDB files, presigned restore URLs).

The operator's store is configured with CONPAAS_BACKUP_S3_* (README, Backups and restore); each
service keeps its backups under a prefix of its own. PostgreSQL's base backups and WAL are
written there by barman-cloud on the service's node (the agent); Redis snapshots by the workers.
"""

from django.conf import settings

from services import clouds
from services.errors import ConpaasError

NOT_CONFIGURED = "backups are not configured: set CONPAAS_BACKUP_S3_* (README, Backups)"
# How long a presigned URL for a restore stays valid (the agent downloads at once).
PRESIGN_SECONDS = 3600


class BackupsNotConfigured(ConpaasError):
    http_status = 409


def configured() -> bool:
    return bool(settings.CONPAAS_BACKUP_S3_ENDPOINT and settings.CONPAAS_BACKUP_S3_BUCKET)


def target_for(service) -> dict:
    """The S3 location (backup_wire.md) holding `service`'s backups; BackupsNotConfigured when the
    installation has no backup store. The prefix is the service's id, not its name: a new service
    of a deleted one's name never finds the old one's backups."""
    if not configured():
        raise BackupsNotConfigured(NOT_CONFIGURED)
    return {
        "endpoint": settings.CONPAAS_BACKUP_S3_ENDPOINT,
        "bucket": settings.CONPAAS_BACKUP_S3_BUCKET,
        "prefix": f"services/{service.pk}",
        "access_key": settings.CONPAAS_BACKUP_S3_ACCESS_KEY,
        "secret_key": settings.CONPAAS_BACKUP_S3_SECRET_KEY,
        "region": settings.CONPAAS_BACKUP_S3_REGION or "us-east-1",
    }


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


def rdb_key(location: dict, backup_id: str) -> str:
    return f"{location['prefix']}/redis/{backup_id}.rdb"


def ensure_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:
        s3.create_bucket(Bucket=bucket)


def upload_rdb(location: dict, backup_id: str, path: str) -> None:
    s3 = client(location)
    ensure_bucket(s3, location["bucket"])
    s3.upload_file(path, location["bucket"], rdb_key(location, backup_id))


def rdb_url(location: dict, backup_id: str) -> str:
    """A presigned GET URL of the RDB, for the agent's restore (it holds no S3 keys for Redis),
    signed for the store's address as the nodes reach it (signing asks the store nothing)."""
    params = {"Bucket": location["bucket"], "Key": rdb_key(location, backup_id)}
    return client(for_nodes(location)).generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS)


def delete_rdb(location: dict, backup_id: str) -> None:
    client(location).delete_object(Bucket=location["bucket"], Key=rdb_key(location, backup_id))
