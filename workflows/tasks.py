"""django-q2 entry points: thin, each safe to run twice."""

from services import operations
from services.choices import OperationKind
from services.models import Operation
from workflows import deploy, lifecycle, reconcile, scaling

# Which function runs each kind of operation (swaps and route changes run synchronously).
WORK = {
    OperationKind.CREATE: lifecycle.run_create,
    OperationKind.DEPLOY: deploy.run_deploy,
    OperationKind.SCALE: scaling.scale,
    OperationKind.DELETE: lifecycle.run_delete,
    OperationKind.RECONCILE: reconcile.reconcile,
}


def run_operation(operation_id: int) -> None:
    operation = Operation.objects.filter(pk=operation_id).select_related("service").first()
    if operation is None or operation.done:
        return
    operations.run(operation, WORK[operation.kind])
