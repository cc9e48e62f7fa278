"""Links between services: setting them, and passing a moved target's new URL to the instances
of the services that link it.

An instance reads its links as environment variables when it starts; `converge_instances` (a
reconcile) sends each running instance its spec again with the current values, and the agent
restarts an instance whose spec changed. So a link that changes, or a target whose URL changes
(a data service's node replaced), is followed by a reconcile of each linking service."""

from django.db import transaction

from services import database_copies, object_storage, operations, quotas
from services.choices import OperationKind, Runtime, ServiceState
from services.models import Bucket, Link, Operation, Service
from services.nodes import open_links
from versions.instances import LinkNotReady, link_environment, link_variable
from versions.models import DatabaseCopy, Instance
from versions.storage import stored_bytes


def set_links(service: Service, targets: list[Service], user) -> Operation | None:
    """Link `service` to exactly `targets`; a reconcile passes the change to running instances.
    A storage service newly linked gives `service` a bucket of its own, made now when the store
    runs (else at the first start of an instance), refused when the owner has no storage room;
    one unlinked keeps the bucket and its objects, and its keys are revoked."""
    linked = set(Link.objects.filter(service=service).values_list("target_id", flat=True))
    for target in targets:
        if target.runtime == Runtime.STORAGE and target.pk not in linked:
            quotas.check_storage_room(service.owner, stored_bytes(service.owner), f"a bucket in {target.name}")
            if target.state == ServiceState.RUNNING:
                object_storage.grant_bucket(target, object_storage.bucket_for(service), holder=service)
    # An unlinked store's keys stop working now, not when the instances next restart.
    # (Its backups' bucket in the platform's store, storage None, is not a link's: it stays.)
    unlinked = Bucket.objects.filter(holder=service, granted=True, storage__isnull=False)
    for bucket in unlinked.exclude(storage__in=targets):
        object_storage.revoke_bucket(bucket)
    with transaction.atomic():
        Link.objects.filter(service=service).exclude(target__in=targets).delete()
        for target in targets:
            Link.objects.get_or_create(service=service, target=target)
    open_links(service, targets)  # the firewalls let the linked nodes in
    if Instance.objects.filter(node__service=service).exists():
        names = ", ".join(t.name for t in targets) or "none"
        return operations.start(service, OperationKind.RECONCILE, user, message=f"links set to: {names}")
    return None


def relink(target: Service) -> list[Operation]:
    """Reconcile each running service linking `target` whose instances hold an old value of it."""
    started = []
    for link in Link.objects.filter(target=target, service__state=ServiceState.RUNNING).select_related("service"):
        service = link.service
        try:
            wanted = link_environment(service)
        except LinkNotReady:
            continue  # the target has no address now; the next change brings one
        # An environment's database copy is on the target's server too: its URL moves with it.
        current = {name: {value} for name, value in wanted.items()}
        for copy in DatabaseCopy.objects.filter(environment__service=service, target=target):
            current[link_variable(target)].add(database_copies.copy_url(target, copy.name))
        stale = any(
            instance.spec.get("env", {}).get(name) not in values
            for instance in Instance.objects.filter(node__service=service)
            for name, values in current.items()
        )
        if stale:
            message = f"{target.name} moved: its linked instances get the new address"
            started.append(operations.start(service, OperationKind.RECONCILE, None, message=message))
    return started
