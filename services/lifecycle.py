"""Creating and deleting services: the desired state is saved, the workers converge to it."""

from django.db import transaction

from services import operations
from services.choices import OperationKind, ServiceState
from services.models import Operation, Service
from versions.models import DEVELOPMENT, PRODUCTION, Environment, new_preview_key


def create(owner, name: str, runtime: str) -> tuple[Service, Operation]:
    with transaction.atomic():
        service = Service.objects.create(owner=owner, name=name, runtime=runtime)
        Environment.objects.create(service=service, name=PRODUCTION)
        Environment.objects.create(service=service, name=DEVELOPMENT, preview_key=new_preview_key())
        operation = operations.start(service, OperationKind.CREATE, owner, message=f"created {runtime} service {name}")
    return service, operation


def request_delete(service: Service, user) -> Operation:
    with transaction.atomic():
        Service.objects.filter(pk=service.pk).update(state=ServiceState.DELETING)
        return operations.start(service, OperationKind.DELETE, user, message=f"deletion of {service.name} requested")


def request_scale(service: Service, role: str, nodes: int, user) -> Operation:
    with transaction.atomic():
        if role == "backend":
            Service.objects.filter(pk=service.pk).update(backend_nodes=nodes)
        return operations.start(
            service,
            OperationKind.SCALE,
            user,
            {"role": role, "nodes": nodes},
            message=f"scale {role} to {nodes} node(s) requested",
        )
