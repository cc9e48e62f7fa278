"""Which function runs each kind of operation."""

from services import nodes, reconcile, scaling
from services.choices import OperationKind
from versions import deploy

WORK = {
    OperationKind.CREATE: nodes.create_service,
    OperationKind.DEPLOY: deploy.run_deploy,
    OperationKind.SCALE: scaling.scale,
    OperationKind.DELETE: nodes.delete_service,
    OperationKind.RECONCILE: reconcile.reconcile,
}
