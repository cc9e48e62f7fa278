"""Creating and deleting services: the desired state is saved, the workers converge to it."""

import secrets

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from routing.table import push
from services import backup_store, object_storage, operations, quotas
from services.choices import DATA_RUNTIMES, NodeState, OperationKind, Outcome, ServiceState
from services.errors import Conflict, ConpaasError, OperationFailed
from services.models import Bucket, Event, Operation, Service
from services.nodes import boot_node, destroy_node
from versions.models import DEVELOPMENT, PRODUCTION, Environment, new_preview_key
from versions.storage import delete_unreferenced_archives
from workflows import data_services, replication
from workflows.preview_databases import drop_copies


def create(owner, name: str, runtime: str, application=None, environments=(), **options) -> tuple[Service, Operation]:
    """Save a new service (in `application`, with `environments` beside production and
    development, as a manifest asks) and start booting its first node. `options` are those
    `update` changes (OPTIONS); one not given keeps its default."""
    service = Service(owner=owner, name=name, runtime=runtime, application=application)
    for option, value in options.items():
        if option not in OPTIONS:
            raise TypeError(f"create() got an unexpected option {option!r}")
        setattr(service, option, value)
    if runtime in DATA_RUNTIMES:
        service.password = secrets.token_urlsafe(24)
    service.validate()
    try:
        with transaction.atomic():
            quotas.lock(owner)
            quotas.check_new_service(owner)
            service.save()
            Environment.objects.create(service=service, name=PRODUCTION)
            if not service.is_data:  # a data service runs no code: production only, its server
                Environment.objects.create(service=service, name=DEVELOPMENT, preview_key=new_preview_key())
            for extra in environments:
                quotas.check_new_environment(service)
                Environment.objects.create(service=service, name=extra, preview_key=new_preview_key())
            operation = operations.start(
                service, OperationKind.CREATE, owner, message=f"created {runtime} service {name}"
            )
    except IntegrityError:  # a concurrent create took the name between the check and the save
        raise ValidationError({"name": f"you already have a service named {name}"}) from None
    return service, operation


# What may change on a service once it exists (never its name or runtime).
OPTIONS = ("java_heap_mb", "health_check_path", "health_check_status", "synchronous")
HEALTH_OPTIONS = ("health_check_path", "health_check_status")


def update(service: Service, user, **changes) -> Service:
    """Change a service's options (OPTIONS; those not given keep their value).

    The JVM heap is read when an instance starts: instances started from now on (a deploy of
    another version, a new node) have it; running ones keep theirs, since restarting a Tomcat in
    place would fail the requests it serves meanwhile. The health check is the routers': they take
    it at once, holding the service meanwhile as a swap does, so no deploy's gate reads it half-set."""
    unknown = set(changes) - set(OPTIONS)
    if unknown:
        raise TypeError(f"update() got unexpected options {sorted(unknown)}")
    before = {option: getattr(service, option) for option in OPTIONS}
    health_before = service.health_check
    for option, value in changes.items():
        setattr(service, option, value)
    service.validate()
    changed = {option: value for option, value in changes.items() if value != before[option]}
    if not changed:
        return service
    said = []
    if "java_heap_mb" in changed:
        said.append(
            f"java heap set to {service.java_heap_mb} MB (was {before['java_heap_mb']} MB); "
            "instances started from now on have it"
        )
    if "synchronous" in changed:
        with operations.holding(service, OperationKind.ROUTE, user, {"options": ["synchronous"]}) as operation:
            Service.objects.filter(pk=service.pk).update(synchronous=service.synchronous)
            replication.set_synchronous(service)
            mode = (
                "wait for a standby: a failover loses no acknowledged commit"
                if service.synchronous
                else ("no longer wait for a standby (a failover may lose the last acknowledged commits)")
            )
            Event.record(service, "service.update", f"commits now {mode}", actor=user, operation=operation)
        changed.pop("synchronous")
        if not changed:
            return service
    if changed.keys() & set(HEALTH_OPTIONS):
        said.append(f"health check set to {service.health_check} (was {health_before})")
        with operations.holding(service, OperationKind.ROUTE, user, {"options": sorted(changed)}) as operation:
            Service.objects.filter(pk=service.pk).update(**changed)
            push(service)  # the routers re-render their backends' checks (router/proxy.py)
            Event.record(service, "service.update", "; ".join(said), actor=user, operation=operation)
        return service
    Service.objects.filter(pk=service.pk).update(**changed)
    Event.record(service, "service.update", "; ".join(said), actor=user)
    return service


def request_delete(service: Service, user, force: bool = False, along=()) -> Operation:
    """Start deleting `service`. Refused while other services link it, unless `force`: their
    instances would keep a URL to nothing. `along`: the services deleted with it (an
    application's), whose links to it do not count."""
    linking = service.linking_services(excluding=along)
    names = ", ".join(s.name for s in linking)
    if linking and not force:
        raise Conflict(
            f"{service.name} is linked by {names}: delete them or unlink it from their manifest first, "
            "or force the delete"
        )
    message = f"deletion of {service.name} requested"
    if linking:
        message += f" (forced); left with a dead link: {names}"
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(state=ServiceState.DELETING)
        operation = operations.start(service, OperationKind.DELETE, user, message=message)
        for other in linking:  # their own history says why their link broke, after this one is gone
            Event.record(other, "link", f"{service.name}, which it links, is being deleted (forced)", actor=user)
    return operation


def run_create(operation) -> str:
    """A new service starts as one node holding both roles, its router answering 503 until a deploy."""
    service = operation.service
    try:
        if service.is_data:
            data_services.ensure_server(service, operation)
        elif not service.live_nodes().exclude(state=NodeState.FAILED).exists():
            operation.set_progress("booting the first node")
            boot_node(service, ["proxy", "backend"], operation)
        if not service.is_data:
            push(service)
    except OperationFailed:
        Service.objects.filter(pk=service.pk).update(state=ServiceState.FAILED)
        raise
    Service.objects.filter(pk=service.pk).update(state=ServiceState.RUNNING)
    return f"service {service.name} is running at {service.url}"


def run_delete(operation) -> str:
    service = operation.service
    Service.objects.filter(pk=service.pk).update(state=ServiceState.DELETING)
    for environment in service.environments.all():
        drop_copies(environment, operation)  # on the linked services' servers, which stay
    # A store deleted too (an application's) takes the keys with it.
    buckets = Bucket.objects.filter(holder=service, granted=True, storage__isnull=False)
    buckets = buckets.exclude(storage__state=ServiceState.DELETING)
    for bucket in buckets.select_related("storage"):
        try:  # its bucket stays, with its objects, in the store; its keys go with it
            object_storage.revoke_bucket(bucket)
        except ConpaasError as exc:
            message = f"the keys of bucket {bucket.name} (of {service.name}, deleted) stay valid: {exc}"
            Event.record(bucket.storage, "storage", message, Outcome.FAILED, operation=operation)
    for node in service.live_nodes():
        operation.set_progress(f"destroying node {node.name}")
        destroy_node(node, operation)
    backups_said = ""
    if service.is_database:
        # Its data goes, so do its backups (the deletion's confirmation says so); the server is
        # gone first, so no WAL is archived behind the removal.
        operation.set_progress("removing its backups from the backup store")
        try:
            if backups_said := backup_store.forget(service):
                Event.record(service, "backup", backups_said, Outcome.SUCCEEDED, operation=operation)
        except ConpaasError as exc:
            backups_said = f"its backups stay in the backup store: {exc}"
            Event.record(service, "backup", backups_said, Outcome.FAILED, operation=operation)
        # The operation outlives the service and its events: its last words say what happened.
        operation.set_progress(backups_said[:200] or "it had no backup")
    shas = list(service.versions.values_list("sha256", "kind"))
    name = service.name
    with transaction.atomic():
        service.environments.all().delete()
        service.delete()
    delete_unreferenced_archives(shas)
    return f"service {name} deleted" + (f"; {backups_said}" if backups_said else "")
