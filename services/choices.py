from django.db import models


class Runtime(models.TextChoices):
    PYTHON = "python", "Python (WSGI)"
    PHP = "php", "PHP"
    JAVA = "java", "Java (WAR)"
    STATIC = "static", "Static files"


class ServiceState(models.TextChoices):
    CREATING = "creating"
    RUNNING = "running"
    FAILED = "failed"
    DELETING = "deleting"


class NodeState(models.TextChoices):
    BOOTING = "booting"
    RUNNING = "running"
    FAILED = "failed"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class Role(models.TextChoices):
    PROXY = "proxy"
    BACKEND = "backend"


class OperationKind(models.TextChoices):
    CREATE = "create"
    DEPLOY = "deploy"
    SWAP = "swap"
    ROUTE = "route"
    SCALE = "scale"
    DELETE = "delete"
    RECONCILE = "reconcile"
    HEAL = "heal"


class OperationState(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Outcome(models.TextChoices):
    INFO = "info"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# A data service's runtime -> the variable its linked instances find its connection URL in; a
# linked web service is `<NAME>_URL` (versions/instances.py: link_environment).
LINK_VARIABLES = {"postgresql": "DATABASE_URL", "redis": "REDIS_URL"}
