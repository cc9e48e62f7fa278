"""Creating and deleting services: the desired state is saved, the workers converge to it."""

import secrets

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from routing.table import push
from services import operations, quotas
from services.choices import DATA_RUNTIMES, NodeState, OperationKind, ServiceState
from services.errors import Conflict, OperationFailed
from services.models import Event, Operation, Service
from services.nodes import boot_node, destroy_node
from versions.models import DEVELOPMENT, PRODUCTION, Environment, new_preview_key
from versions.storage import delete_unreferenced_archives
from workflows import databases
from workflows.copies import drop_copies


def create(
    owner, name: str, runtime: str, java_heap_mb: int | None = None, application=None, environments=()
) -> tuple[Service, Operation]:
    """Save a new service (in `application`, with `environments` beside production and
    development, as a manifest asks) and start booting its first node."""
    service = Service(owner=owner, name=name, runtime=runtime, application=application)
    if java_heap_mb is not None:
        service.java_heap_mb = java_heap_mb
    if runtime in DATA_RUNTIMES:
        service.password = secrets.token_urlsafe(24)
    service.validate()
    try:
        with transaction.atomic():
            quotas.lock(owner)
            quotas.check_new_service(owner)
            service.save()
            Environment.objects.create(service=service, name=PRODUCTION)
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


def update(service: Service, user, java_heap_mb: int) -> Service:
    """Change a service's settings. The JVM heap is read when an instance starts: instances started
    from now on (a deploy of another version, a new node) have it; running ones keep theirs, since
    restarting a Tomcat in place would fail the requests it serves meanwhile."""
    previous = service.java_heap_mb
    service.java_heap_mb = java_heap_mb
    service.validate()
    if java_heap_mb != previous:
        Service.objects.filter(pk=service.pk).update(java_heap_mb=java_heap_mb)
        message = f"java heap set to {java_heap_mb} MB (was {previous} MB); instances started from now on have it"
        Event.record(service, "service.update", message, actor=user)
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
            databases.run_create(operation)
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
    for node in service.live_nodes():
        operation.set_progress(f"destroying node {node.name}")
        destroy_node(node, operation)
    shas = list(service.versions.values_list("sha256", "kind"))
    name = service.name
    with transaction.atomic():
        service.environments.all().delete()
        service.delete()
    delete_unreferenced_archives(shas)
    return f"service {name} deleted"
