"""Storage services' object store (SeaweedFS) as the control plane speaks to it: S3 through boto3
with the store's admin identity, and `weed shell` for what S3 does not say (identities,
replication, bucket quotas), its commands on its standard input, never its command line.

`grant` is the one way to a bucket of one's own: a linked service's (`grant_bucket`, called by
versions/instances.py: link_environment) or a service's backups' in the platform's backup store
(services/backup_store.py). Each bucket has one identity that reaches it alone
(SeaweedFS actions `Read:<bucket>`, `Write:<bucket>`, `List:<bucket>`), kept in the database
(services.models.Bucket) and pushed to the filer with `s3.configure … -apply`, which the S3
gateway picks up without a restart. Secret keys never reach events, logs or pages other than the
owner's credentials call.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from conpaas_common.weed import WeedMissing, checked_weed
from conpaas_common.wire import STORAGE_REGION
from services import quotas
from services.choices import NodeState, Runtime, ServiceState
from services.errors import Conflict, ConpaasError, OperationFailed
from services.models import Bucket, Node, Service

# S3's rule for a bucket name, as SeaweedFS applies it (3 to 63; no dots: they break
# virtual-host addressing and TLS).
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
SHELL_TIMEOUT = 120
REPLICATED = "001"  # two copies, on two volume servers of the one rack


class StoreError(OperationFailed):
    """The store refused or did not answer; the message says what was asked."""


class NotOwner(ConpaasError):
    http_status = 403


@dataclass(frozen=True)
class S3Credentials:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = STORAGE_REGION

    def environment(self) -> dict[str, str]:
        """A linked instance's variables: what any S3 client library reads."""
        return {
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_BUCKET": self.bucket,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


def bucket_name_problem(name: object) -> str:
    if not isinstance(name, str) or not BUCKET_RE.match(name):
        return (
            "a bucket name is 3 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit"
        )
    return ""


def bucket_for(service: Service) -> str:
    """The bucket a service linking a store gets: its own name (service names are unique per
    owner, a store belongs to one owner), lengthened when shorter than S3 allows."""
    return service.name if len(service.name) >= 3 else f"{service.name}-data"


def admin_access_key(service: Service) -> str:
    return f"CPADMIN{service.pk:013d}"


def new_access_key() -> str:
    return "CP" + secrets.token_hex(9).upper()


def weed_path() -> str:
    return getattr(settings, "CONPAAS_WEED", "") or str(Path(sys.executable).with_name("weed"))


@dataclass(frozen=True)
class Store:
    """A running storage service as its clients reach it."""

    endpoint: str
    access_key: str
    secret_key: str
    master: str
    filer: str

    @classmethod
    def of(cls, service: Service) -> Store:
        if service.runtime != Runtime.STORAGE:
            raise Conflict(f"{service.name} is a {service.runtime} service, not a storage service")
        node = service.server_node()
        if node is None or not node.data_details.get("master"):
            raise StoreError(f"{service.name} has no running S3 gateway")
        return cls(
            f"http://{node.address}:{node.data_port}",
            admin_access_key(service),
            service.password,
            node.data_details["master"],
            node.data_details["filer"],
        )

    def s3(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=STORAGE_REGION,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )

    def shell(self, script: str, what: str, strict: bool = True) -> str:
        """Run `script` in `weed shell`; its output. StoreError naming `what` on a failure (the
        output is not quoted: `s3.configure` echoes the identity it wrote, secret included);
        `strict=False` leaves judging the output to the caller."""
        try:
            weed = checked_weed(weed_path())
        except WeedMissing as exc:
            raise StoreError(f"{what}: {exc}") from None
        argv = [weed, "shell", f"-master={self.master}", f"-filer={self.filer}"]
        try:
            result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=SHELL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise StoreError(f"{what}: weed shell did not answer within {SHELL_TIMEOUT} s") from None
        said = result.stdout + result.stderr
        if result.returncode != 0 or (strict and "error:" in said.lower()):
            raise StoreError(f"{what}: weed shell failed (exit {result.returncode})")
        return said


def grant_bucket(storage: Service, bucket: str, holder: Service | None = None) -> S3Credentials:
    """A bucket of `storage` and an identity that reaches only it: made when missing (in the
    database, then in the store), as they are when they exist. Safe to call again and again."""
    if problem := bucket_name_problem(bucket):
        raise Conflict(f"{bucket!r}: {problem}")
    if storage.state != ServiceState.RUNNING:
        raise Conflict(f"{storage.name} is not running ({storage.state}): no bucket can be made in it yet")
    row = bucket_row(storage, bucket, holder)
    return grant(Store.of(storage), row, quota_mb(storage))


def bucket_row(storage: Service | None, bucket: str, holder: Service | None) -> Bucket:
    """The database's row of a bucket of `storage` (None: of the platform's backup store), made
    with new keys when missing; Conflict when it holds another service's data."""
    rows = Bucket.objects.filter(storage=storage, name=bucket)
    row = rows.first()
    if row is None:
        try:
            with transaction.atomic():
                row = Bucket.objects.create(
                    storage=storage,
                    name=bucket,
                    holder=holder,
                    access_key=new_access_key(),
                    secret_key=secrets.token_urlsafe(30),
                )
        except IntegrityError:  # another worker made it meanwhile
            row = rows.get()
    if holder is not None and row.holder_id not in (None, holder.pk):
        raise Conflict(f"bucket {bucket} of {storage or 'the backup store'} belongs to another service")
    return row


def grant(store: Store, row: Bucket, size_mb: int | None) -> S3Credentials:
    """`row`'s bucket and identity in `store` (a storage service's or the platform's backup
    store), pushed unless the row says they are there."""
    if not row.granted:
        push_bucket(store, row, size_mb)
        Bucket.objects.filter(pk=row.pk).update(granted=True)
        row.granted = True
    return S3Credentials(store.endpoint, row.name, row.access_key, row.secret_key)


def revoke_bucket(row: Bucket) -> None:
    """The bucket's identity deleted from its storage service (its objects stay, and grant_bucket
    gives the same keys back); the row says it is no longer granted."""
    if row.granted:
        revoke(Store.of(row.storage), row)
    Bucket.objects.filter(pk=row.pk).update(granted=False)
    row.granted = False


def revoke(store: Store, row: Bucket) -> None:
    """`row`'s identity deleted from `store` (a storage service's or the platform's backup store)."""
    store.shell(f"s3.configure -user=bucket-{row.name} -delete -apply\n", f"revoking {row.name}")


def quota_mb(storage: Service) -> int:
    return quotas.limit(storage.owner, "storage_mb")


def push_bucket(store: Store, row: Bucket, size_mb: int | None) -> None:
    """The bucket made and its identity written in `store`; `size_mb`: SeaweedFS's bound on it
    (None: none, the backup store's: backups count against the owner's quota elsewhere)."""
    s3 = store.s3()
    try:
        s3.create_bucket(Bucket=row.name)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except Exception as exc:
        raise StoreError(f"creating bucket {row.name}: {exc}") from None
    actions = "Read,Write,List,Tagging"
    script = (
        f"s3.configure -user=bucket-{row.name} -actions={actions} -buckets={row.name} "
        f"-access_key={row.access_key} -secret_key={row.secret_key} -apply\n"
    )
    if size_mb is not None:
        # SeaweedFS's own bound on the bucket (s3.bucket.quota.enforce makes one over it read-only).
        script += f"s3.bucket.quota -name={row.name} -op=set -sizeMB={size_mb}\n"
    store.shell(script, f"granting bucket {row.name}")


def replicate(storage: Service, volume_nodes: int) -> str:
    """From 2 volume servers (the first node's counts), every object on 2 of them: new writes
    under /buckets/ with replication 001, and the volumes written before set to 001 and copied
    (volume.fix.replication). Returns what was done, in words."""
    store = Store.of(storage)
    # Each bucket is a collection of its own: grown 2 volumes at a time, not SeaweedFS's 7, so
    # that a node's volumes (MAX_VOLUMES of the recipe) hold many buckets.
    replication = REPLICATED if volume_nodes >= 2 else "000"
    store.shell(
        f"fs.configure -locationPrefix=/buckets/ -replication={replication} -volumeGrowthCount=2 -apply\n",
        "setting the buckets' replication",
    )
    if volume_nodes < 2:
        return "one volume server: one copy of each object"
    listed = store.shell("volume.list\n", "listing volumes")
    single = sorted(set(re.findall(r"volume Id:(\d+), .*ReplicaPlacement:000,", listed)))
    if not single:
        # Volumes that lost a copy (a volume node replaced) get it back on another node.
        store.shell("lock\nvolume.fix.replication -apply\nunlock\n", "copying volumes that lost a copy", strict=False)
        return f"every object on 2 of {volume_nodes} volume servers"
    script = "lock\n"
    script += "".join(f"volume.configure.replication -volumeId={vid} -replication={REPLICATED}\n" for vid in single)
    script += "volume.fix.replication -apply\nunlock\n"
    # Judged by the volumes' copies below: a copy refused is said in the output, not fatal.
    store.shell(script, "replicating the volumes written before", strict=False)
    listed = store.shell("volume.list\n", "listing volumes")
    held = re.findall(r"volume Id:(\d+), ", listed)
    alone = [vid for vid in single if held.count(vid) < 2]
    if alone:
        # A 001 volume with one copy refuses writes: back to 000 until the next try.
        store.shell(
            "lock\n"
            + "".join(f"volume.configure.replication -volumeId={vid} -replication=000\n" for vid in alone)
            + "unlock\n",
            "restoring the volumes not copied",
        )
        return f"new writes on 2 of {volume_nodes} volume servers; {len(alone)} older volume(s) could not be copied yet"
    return f"every object on 2 of {volume_nodes} volume servers ({len(single)} older volume(s) copied)"


def count(storage: Service) -> None:
    """Each bucket's objects and bytes, as the store says now, saved for the pages; buckets over
    their quota made read-only by SeaweedFS (s3.bucket.quota.enforce)."""
    store = Store.of(storage)
    s3 = store.s3()
    now = timezone.now()
    for row in Bucket.objects.filter(storage=storage, granted=True):
        objects = size = 0
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=row.name):
                for item in page.get("Contents", ()):
                    objects += 1
                    size += item["Size"]
        except Exception as exc:
            raise StoreError(f"counting bucket {row.name}: {exc}") from None
        Bucket.objects.filter(pk=row.pk).update(object_count=objects, size=size, counted=now)
    # Each bucket's SeaweedFS quota follows the owner's (an operator may have changed it); the
    # store makes a bucket over it read-only (deletes still work) and writable again below it.
    size_mb = quota_mb(storage)
    names = Bucket.objects.filter(storage=storage, granted=True).values_list("name", flat=True)
    script = "".join(f"s3.bucket.quota -name={name} -op=set -sizeMB={size_mb}\n" for name in names)
    store.shell(script + "s3.bucket.quota.enforce -apply\n", "enforcing the buckets' quotas")


def count_due(max_age: float) -> int:
    """Count the buckets of every running storage service not counted for `max_age` seconds; each
    claimed with a conditional UPDATE first, so passes that overlap never count it twice."""
    now = timezone.now()
    stale = Q(counted__isnull=True) | Q(counted__lte=now - timedelta(seconds=max_age))
    due = Bucket.objects.filter(stale, granted=True, storage__state=ServiceState.RUNNING)
    counted = 0
    for storage_id in set(due.values_list("storage_id", flat=True)):
        if not due.filter(storage_id=storage_id).update(counted=now):
            continue
        storage = Service.objects.filter(pk=storage_id).first()
        if storage is not None:
            try:
                count(storage)
            except OperationFailed:
                continue  # the next pass tries again; the page shows the last counts
            counted += 1
    return counted


def stored_bytes(owner) -> int:
    """The bytes of the owner's storage services, as last counted."""
    total = Bucket.objects.filter(storage__owner_id=owner.pk).aggregate(total=Sum("size"))["total"]
    return total or 0


def credentials(service: Service, user) -> dict:
    """The whole store, the admin identity: for the service's owner alone."""
    if service.owner_id != user.pk:
        raise NotOwner(f"only the owner of {service.name} may read its credentials")
    store = Store.of(service)
    return {"url": store.endpoint, "access_key": store.access_key, "secret_key": store.secret_key}


def volume_nodes(service: Service):
    """The nodes of a storage service beyond its first: volume servers."""
    first = service.server_node()
    nodes = service.live_nodes().filter(is_backend=True, state=NodeState.RUNNING)
    return nodes.exclude(pk=first.pk) if first else nodes.none()


def record_details(node: Node, instance: dict) -> None:
    details = instance.get("details") or {}
    Node.objects.filter(pk=node.pk).update(data_details=details)
    node.data_details = details
