"""django-q2 entry points: thin, each safe to run twice."""

from services import operations
from services.models import Operation


def run_operation(operation_id: int) -> None:
    from services.workflows import WORK

    operation = Operation.objects.filter(pk=operation_id).select_related("service").first()
    if operation is None or operation.done:
        return
    operations.run(operation, WORK[operation.kind])
