from django.db import models


class Runtime(models.TextChoices):
    PYTHON = "python", "Python (WSGI)"
    PHP = "php", "PHP"
    JAVA = "java", "Java (WAR)"
    STATIC = "static", "Static files"
    POSTGRESQL = "postgresql", "PostgreSQL (data service)"
    REDIS = "redis", "Redis (data service)"


# Data services: no code versions, no router; their one node runs the server (README, Data services).
DATA_RUNTIMES = (Runtime.POSTGRESQL, Runtime.REDIS)


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
    LOAD = "load"
    BACKUP = "backup"
    RESTORE = "restore"


class BackupState(models.TextChoices):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class BackupKind(models.TextChoices):
    BASE = "base", "PostgreSQL base backup (plus the archived WAL after it)"
    RDB = "rdb", "Redis RDB snapshot"


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
