from django.db import models


class Runtime(models.TextChoices):
    PYTHON = "python", "Python (WSGI)"
    PHP = "php", "PHP"
    JAVA = "java", "Java (WAR)"
    STATIC = "static", "Static files"
    POSTGRESQL = "postgresql", "PostgreSQL (data service)"
    REDIS = "redis", "Redis (data service)"
    MYSQL = "mysql", "MySQL: MariaDB, Galera from 3 nodes (data service)"
    STORAGE = "storage", "S3 object storage (data service)"


# Data services: no code versions, no HTTP router; their server nodes run the server (README, Data
# services). A storage service is one too: its first node runs the S3 gateway, more nodes add
# volume servers.
DATA_RUNTIMES = (Runtime.POSTGRESQL, Runtime.REDIS, Runtime.MYSQL, Runtime.STORAGE)
# The databases: one server holding the data, backed up and restored (workflows/backups.py) and
# rebuilt from its backups when its node dies (workflows/healing.py). A store keeps copies instead.
DATABASE_RUNTIMES = (Runtime.POSTGRESQL, Runtime.REDIS, Runtime.MYSQL)
# The databases that replicate (workflows/replication.py): a router node is their one address, in
# front of a primary and replicas that a manager of the engine's own fails over (Redis Sentinel,
# Patroni); a mysql service's router is in front of a Galera cluster, whose members all write.
REPLICATED_RUNTIMES = (Runtime.POSTGRESQL, Runtime.REDIS, Runtime.MYSQL)
# Who promotes a replica when the primary dies, by runtime (events say it): Galera promotes none,
# the router sends writes to another synced member.
FAILOVER_MANAGERS = {"postgresql": "Patroni", "redis": "Redis Sentinel", "mysql": "Galera"}


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
    SQL = "sql", "MariaDB SQL dump (mariadb-dump --single-transaction)"


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
LINK_VARIABLES = {
    "postgresql": "DATABASE_URL",
    "mysql": "DATABASE_URL",
    "redis": "REDIS_URL",
    "storage": "S3_ENDPOINT_URL",
}
# …and the one that reaches its replicas for reads, when it has a router (workflows/replication.py).
LINK_REPLICA_VARIABLES = {
    "postgresql": "DATABASE_REPLICA_URL",
    "mysql": "DATABASE_REPLICA_URL",
    "redis": "REDIS_REPLICA_URL",
}
# A linked storage service gives these besides S3_ENDPOINT_URL: a bucket of the linking service's
# own and keys that reach only it (services/object_storage.py), so any S3 client works unchanged.
STORAGE_LINK_VARIABLES = (
    "S3_ENDPOINT_URL",
    "S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
)
