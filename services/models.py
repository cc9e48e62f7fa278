import hashlib
import logging
import re
import secrets
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from knox.models import AbstractAuthToken
from knox.settings import CONSTANTS

from conpaas_common.wire import (
    MAX_HEAP_MB,
    MIN_HEAP_MB,
    MYSQL_DATABASE,
    MYSQL_USER,
    PG_DATABASE,
    PG_USER,
    health_path_problem,
    health_status_problem,
)
from services.choices import (
    DATA_RUNTIMES,
    DATABASE_RUNTIMES,
    REPLICATED_RUNTIMES,
    BackupKind,
    BackupState,
    NodeState,
    OperationKind,
    OperationState,
    Outcome,
    Runtime,
    ServiceState,
)

log = logging.getLogger("conpaas.events")

slug_validator = RegexValidator(
    r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$",
    "Use 2 to 40 lowercase letters, digits and dashes, starting with a letter.",
)


class ApplicationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """The applications `user` may see: their own; staff see every one. The one rule, for the
        API, the console and anything else that answers a user."""
        return self if user.is_staff else self.filter(owner=user)


class Application(models.Model):
    """A named group of services, described by one manifest."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="applications")
    name = models.CharField(max_length=40, validators=[slug_validator])
    created = models.DateTimeField(default=timezone.now)

    objects = ApplicationQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="application_unique_name")]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        same_name = Application.objects.filter(owner_id=self.owner_id, name=self.name).exclude(pk=self.pk)
        if self.owner_id and same_name.exists():
            raise ValidationError({"name": f"you already have an application named {self.name}"})

    def validate(self) -> None:
        """Every rule of an application, field-keyed; the uniqueness rule is clean()'s, with its own message."""
        self.full_clean(validate_unique=False, validate_constraints=False)


def validate_health_path(value) -> None:
    """The routers' own rule (they refuse anything else), so a path saved here is one they take."""
    if problem := health_path_problem(value):
        raise ValidationError(problem)


def validate_health_status(value) -> None:
    if problem := health_status_problem(value):
        raise ValidationError(problem)


# A small machine's share for one Tomcat: a node holds a few instances (two versions at least).
JAVA_HEAP_MB = 256

# Nodes that are gone or going: not part of the service any more.
GONE = (NodeState.DESTROYING, NodeState.DESTROYED)


class ServiceQuerySet(models.QuerySet):
    def visible_to(self, user):
        """The services `user` may see: their own; staff see every one. The one rule, for the API,
        the console and anything else that answers a user."""
        return self if user.is_staff else self.filter(owner=user)

    def get_visible(self, user, pk):
        """The service with id `pk` if `user` may see it; another user's is a 404 (Http404), exactly
        like a missing one, so that a request learns nothing about others' services."""
        return get_object_or_404(self.visible_to(user), pk=pk)


class Service(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="services")
    application = models.ForeignKey(
        Application, null=True, blank=True, on_delete=models.SET_NULL, related_name="services"
    )
    name = models.CharField(max_length=40, validators=[slug_validator])
    runtime = models.CharField(max_length=20, choices=Runtime.choices)
    state = models.CharField(max_length=20, choices=ServiceState.choices, default=ServiceState.CREATING)
    backend_nodes = models.PositiveSmallIntegerField(default=1, help_text="Desired number of backend nodes.")
    # The routers' health check of every instance: GET this path, and this status or, when null,
    # any below 500 (images/conpaas_agent/router/config.py renders both).
    health_check_path = models.CharField(
        max_length=200,
        default="/",
        validators=[validate_health_path],
        help_text="The path the routers' health check asks each instance for.",
    )
    health_check_status = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[validate_health_status],
        help_text="The status the health check expects; empty: any status below 500.",
    )
    # The JVM's heap of each instance of a java service; the agent's recipe takes the same range.
    java_heap_mb = models.PositiveIntegerField(
        default=JAVA_HEAP_MB,
        validators=[MinValueValidator(MIN_HEAP_MB), MaxValueValidator(MAX_HEAP_MB)],
        help_text="Java services: the heap (-Xmx) of each instance, in MB.",
    )
    # A replicated PostgreSQL service: a commit waits until a standby has it (Patroni's
    # synchronous mode), so a failover loses no acknowledged commit.
    synchronous = models.BooleanField(
        default=False, help_text="PostgreSQL services: each commit waits for a standby to have it."
    )
    # Labels of uploads without one: v1, v2, … counted with an atomic UPDATE, never latest+1.
    version_counter = models.PositiveIntegerField(default=0)
    # The operation that holds this service; claimed with a conditional UPDATE (services/operations.py).
    locked_by = models.ForeignKey("Operation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # When the workers last checked this service's nodes (self-healing, workflows/healing.py).
    nodes_checked = models.DateTimeField(null=True, blank=True, editable=False)
    # A data service's password, made when it is created; shown only to its owner who asks for it
    # (the credentials call, `conpaas db`), never in events, logs or other answers.
    password = models.CharField(max_length=64, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now)
    # A data service's backup policy (workflows/backups.py): a backup every `backup_every_hours`,
    # kept `backup_keep_days` (the newest verified one always kept).
    backup_enabled = models.BooleanField(default=True, help_text="Data services: take backups on a schedule.")
    backup_every_hours = models.PositiveIntegerField(
        default=24, validators=[MinValueValidator(1), MaxValueValidator(24 * 31)], help_text="Hours between backups."
    )
    backup_keep_days = models.PositiveIntegerField(
        default=7, validators=[MinValueValidator(1), MaxValueValidator(3650)], help_text="Days backups are kept."
    )
    # Why the last backup failed or could not be verified; empty when the last one is good.
    backup_problem = models.TextField(blank=True, editable=False)
    # PostgreSQL: the last archived WAL segment's time as the agent last said it (read by the
    # workers after each backup; the end of the recovery window, never asked per request).
    backup_archived_until = models.DateTimeField(null=True, blank=True, editable=False)
    # PostgreSQL: when its last restore in place ended. The moments between the one it restored
    # to and this one now have two histories, and a restore to a time follows the newest: the
    # recovery window starts here.
    backup_history_from = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="service_unique_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        errors = {}
        if self.runtime != Runtime.JAVA and self.java_heap_mb != JAVA_HEAP_MB:
            errors["java_heap_mb"] = f"only java services run a JVM; a {self.runtime} service has no heap to set"
        if self.is_data and self.health_check_path != "/":
            errors["health_check_path"] = f"a {self.runtime} service has no router to check it over HTTP"
        if self.synchronous and self.runtime != Runtime.POSTGRESQL:
            errors["synchronous"] = synchronous_problem(self.runtime)
        if self.is_data and self.health_check_status is not None:
            errors["health_check_status"] = f"a {self.runtime} service has no router to check it over HTTP"
        same_name = Service.objects.filter(owner_id=self.owner_id, name=self.name).exclude(pk=self.pk)
        if self.owner_id and same_name.exists():
            errors["name"] = f"you already have a service named {self.name}"
        if errors:
            raise ValidationError(errors)

    def validate(self) -> None:
        """Every rule of a service, field-keyed; the uniqueness rule is clean()'s, with its own message."""
        self.full_clean(validate_unique=False, validate_constraints=False)

    def live_nodes(self):
        return self.nodes.exclude(state__in=GONE)

    def live_node_list(self) -> list["Node"]:
        """live_nodes() as a list, read from `nodes` prefetched by the caller when it was (a list
        page of a thousand services asks once, not once per service)."""
        prefetched = getattr(self, "_prefetched_objects_cache", {}).get("nodes")
        if prefetched is None:
            return list(self.live_nodes())
        return [node for node in prefetched if node.state not in GONE]

    def proxy_nodes(self):
        return self.live_nodes().filter(is_proxy=True)

    def linking_services(self, excluding=()) -> list["Service"]:
        """The services that link this one and stay (neither being deleted nor in `excluding`,
        the services deleted with it): deleting it would leave them a link to nothing."""
        linking = Service.objects.filter(links__target=self).exclude(state=ServiceState.DELETING)
        return list(linking.exclude(pk__in=[s.pk for s in excluding]).order_by("name"))

    def backend_node_list(self):
        return self.live_nodes().filter(is_backend=True, state__in=[NodeState.BOOTING, NodeState.RUNNING])

    @property
    def health_check(self) -> str:
        """The routers' health check in words (events, the console)."""
        status = self.health_check_status
        return f"GET {self.health_check_path} answering {status or 'any status below 500'}"

    @property
    def is_data(self) -> bool:
        return self.runtime in DATA_RUNTIMES

    @property
    def is_database(self) -> bool:
        """A database (postgresql, redis, mysql): backed up, restored, rebuilt from its backups."""
        return self.runtime in DATABASE_RUNTIMES

    def server_node(self) -> "Node | None":
        """A data service's node that runs its server: a replicated one's primary, as last seen
        (Node.replication); a storage service's first node, its S3 gateway."""
        servers = self.live_nodes().filter(state=NodeState.RUNNING, data_port__isnull=False, is_proxy=False)
        return servers.filter(replication__role="primary").first() or servers.first()

    @property
    def is_routed(self) -> bool:
        """A replicated data service with a router node in front of its servers: every one made
        since routers exist (one made before gets its router when it is scaled)."""
        if self.runtime not in REPLICATED_RUNTIMES:
            return False
        nodes = self.live_nodes()
        return nodes.filter(is_proxy=True).exists() or not nodes.filter(scratch=False).exists()

    def router_node(self) -> "Node | None":
        """A replicated data service's router: its one address (workflows/replication.py)."""
        return self.live_nodes().filter(state=NodeState.RUNNING, data_port__isnull=False, is_proxy=True).first()

    def connection_url(self, with_password: bool = True) -> str | None:
        """What a linked instance receives (DATABASE_URL, REDIS_URL): the service's router's
        address (the server's, for a service made before routers) with the credentials; without
        them, the service's URL. None until it runs."""
        # A replicated service's clients go through its router alone: none before it runs.
        node = self.router_node() or (None if self.is_routed else self.server_node())
        if node is None:
            return None
        return data_url(self.runtime, node.address, node.data_port, self.password if with_password else "")

    def replica_url(self, with_password: bool = True) -> str | None:
        """Where reads reach the replicas (the primary while none is up): the router's replica
        port (DATABASE_REPLICA_URL, REDIS_REPLICA_URL). None without a router."""
        router = self.router_node()
        port = router.data_details.get("replica_port") if router else None
        if not port:
            return None
        return data_url(self.runtime, router.address, port, self.password if with_password else "")

    @property
    def url(self) -> str | None:
        if self.is_data:
            return self.connection_url(with_password=False)
        if "nodes" in getattr(self, "_prefetched_objects_cache", {}):
            proxy = next((n for n in self.live_node_list() if n.is_proxy and n.state == NodeState.RUNNING), None)
        else:
            proxy = self.proxy_nodes().filter(state=NodeState.RUNNING).first()
        return self.url_through(proxy) if proxy else None

    def url_through(self, proxy: "Node") -> str:
        """The service's URL served by `proxy`: the one rule behind every URL the API, the console
        and the CLI show. With CONPAAS_APPS_DOMAIN, a host name of the service's own (host_label)
        on the router's port, so that browsers keep the cookies of the console and of each app
        apart; without it, the router's own address."""
        domain = settings.CONPAAS_APPS_DOMAIN
        if not domain:
            return proxy.http_url
        return f"http://{host_label(self.name, self.owner.username)}.{domain}:{proxy.public_http[1]}/"


# A DNS label: at most 63 of a-z, 0-9 and "-" (RFC 1035).
DNS_LABEL_LENGTH = 63
READABLE_OWNER = re.compile(r"[a-z0-9]+")
# The shape of an owner part made from a digest; a username of that shape gets a digest too, so
# that a readable owner part never equals a digested one.
DIGESTED_OWNER = re.compile(r"[a-z0-9]*x[0-9a-f]{10}")


def host_label(service_name: str, username: str) -> str:
    """`<service>-<owner>`, a DNS label of its own for each service (README, Settings).

    The owner part never holds a dash, so the last dash splits service from owner, and service
    names are slugs (slug_validator). A username of lower-case letters and digits is the owner part
    as it is when the label stays within 63 characters; any other (capitals, dots, @, other
    alphabets, too long, or shaped like a digest) becomes its letters and digits lower-cased,
    cut to fit, then `x` and 10 hex digits of the SHA-256 of the exact username. Two users or two
    services therefore never share a host name, hence never their cookies."""
    room = DNS_LABEL_LENGTH - len(service_name) - 1
    if READABLE_OWNER.fullmatch(username) and not DIGESTED_OWNER.fullmatch(username) and len(username) <= room:
        return f"{service_name}-{username}"
    digest = hashlib.sha256(username.encode()).hexdigest()[:10]
    letters = re.sub(r"[^a-z0-9]", "", username.lower())[: room - 1 - len(digest)]
    return f"{service_name}-{letters}x{digest}"


def synchronous_problem(runtime: str) -> str:
    """Why `synchronous` is not for a service of `runtime` (the API and a manifest say the same)."""
    if runtime == Runtime.MYSQL:
        return "a mysql service commits synchronously already: Galera certifies each commit on every member"
    return f"only postgresql services commit synchronously; a {runtime} service cannot"


def data_url(runtime: str, address: str, port: int, password: str = "", database: str = "") -> str:
    """A data server's URL: with the password, a linked instance's DATABASE_URL or REDIS_URL.
    `database` names another database than production's (an environment's copy,
    services/database_copies.py): a PostgreSQL database name or a Redis database index. A storage
    service's is its S3 endpoint: keys travel apart (services/object_storage.py)."""
    if runtime == "storage":
        return f"http://{address}:{port}"
    secret = quote(password, safe="")
    if runtime == "postgresql":
        return f"postgres://{PG_USER}{':' + secret if secret else ''}@{address}:{port}/{database or PG_DATABASE}"
    if runtime == "mysql":
        return f"mysql://{MYSQL_USER}{':' + secret if secret else ''}@{address}:{port}/{database or MYSQL_DATABASE}"
    return f"redis://{':' + secret + '@' if secret else ''}{address}:{port}/{database or '0'}"


def production_urls(services) -> dict[int, str]:
    """Service.url of each of `services` (a queryset or a list) in one query: the first running proxy."""
    urls = {}
    proxies = Node.objects.filter(service__in=services, is_proxy=True, state=NodeState.RUNNING).order_by(
        "created", "id"
    )
    proxies = proxies.select_related("service__owner").only(
        "service__name", "service__owner__username", "address", "http_port", "public_address", "public_port"
    )
    for node in proxies.exclude(service__runtime__in=DATA_RUNTIMES):
        urls.setdefault(node.service_id, node.service.url_through(node))
    servers = Node.objects.filter(service__in=services, data_port__isnull=False, state=NodeState.RUNNING)
    servers = servers.order_by("-is_proxy", "created", "id")  # a data service's router first: its address
    fields = ("service_id", "service__runtime", "address", "data_port")
    for service_id, runtime, address, port in servers.values_list(*fields):
        urls.setdefault(service_id, data_url(runtime, address, port))
    return urls


class Node(models.Model):
    """A machine of a service: a cloud VM, or a process group on this host (local cloud)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=60, unique=True)
    cloud = models.CharField(max_length=40)
    provider_id = models.CharField(max_length=200, blank=True)
    is_proxy = models.BooleanField(default=False)
    is_backend = models.BooleanField(default=False)
    state = models.CharField(max_length=20, choices=NodeState.choices, default=NodeState.BOOTING)
    address = models.CharField(max_length=100, blank=True)
    agent_port = models.PositiveIntegerField(null=True, blank=True)
    http_port = models.PositiveIntegerField(null=True, blank=True)
    public_address = models.CharField(max_length=100, blank=True)
    public_port = models.PositiveIntegerField(null=True, blank=True)
    # The port of a data service's server on this node (its agent chose it). A storage service's
    # first node: its S3 gateway's; its other nodes' volume servers' ports are in data_details.
    data_port = models.PositiveIntegerField(null=True, blank=True, editable=False)
    # What the agent reported of its server besides the port (a storage master's `master` and
    # `filer` addresses, as `weed shell` and the volume servers take them).
    data_details = models.JSONField(default=dict, blank=True, editable=False)
    secret = models.CharField(max_length=64, default=secrets.token_hex, editable=False)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    # A proxy node's router, as last asked by the workers (routing/health.py): its answer to
    # GET /v1/proxy, or why it gave none, and when. Pages read these; they never ask the agent.
    router_status = models.JSONField(null=True, blank=True, editable=False)
    router_error = models.TextField(blank=True, editable=False)
    router_checked = models.DateTimeField(null=True, blank=True, editable=False)
    # Self-healing (workflows/healing.py): since when this node's agent has not answered (None:
    # it answered when last asked).
    unreachable_since = models.DateTimeField(null=True, blank=True, editable=False)
    # A replicated data service's server: its part as its agent last said it (`role`: primary or
    # replica, `lag_s`, `link`), saved by the workers (services/replication.py); pages read it.
    replication = models.JSONField(default=dict, blank=True, editable=False)
    # A temporary node of the platform's own (a backup's verification): not counted in the
    # owner's node quota, destroyed when its work ends.
    scratch = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def roles(self) -> list[str]:
        return [role for role, has in (("proxy", self.is_proxy), ("backend", self.is_backend)) if has]

    @property
    def agent_url(self) -> str:
        return f"http://{self.address}:{self.agent_port}"

    @property
    def public_http(self) -> tuple[str, int | None]:
        """Where users reach this node's router: its own address, or where it is published."""
        return self.public_address or self.address, self.public_port or self.http_port

    @property
    def http_url(self) -> str:
        host, port = self.public_http
        return f"http://{host}:{port}/"


class OperationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """The operations `user` may see: those they started and those on their services; staff see
        every one."""
        return self if user.is_staff else self.filter(Q(owner=user) | Q(service__owner=user))


class Operation(models.Model):
    """A long-running action run by a task worker; clients poll it."""

    service = models.ForeignKey(Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="operations")
    service_name = models.CharField(max_length=40, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=20, choices=OperationKind.choices)
    params = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=OperationState.choices, default=OperationState.PENDING)
    progress = models.CharField(max_length=200, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # While running: until when its worker is known alive; the worker renews it, and an operation
    # whose lease runs out is failed (services.operations.expire_leases).
    lease_expires = models.DateTimeField(null=True, blank=True)
    # What it has done so far, as numbers clients show live (a dump load: bytes read of the total,
    # rows or keys loaded).
    counters = models.JSONField(default=dict, blank=True)

    objects = OperationQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["state"], name="operation_state")]

    def __str__(self) -> str:
        return f"{self.kind} {self.service_name} #{self.pk}"

    @property
    def done(self) -> bool:
        return self.state in (OperationState.SUCCEEDED, OperationState.FAILED)

    def set_progress(self, text: str) -> None:
        self.progress = text[:200]
        Operation.objects.filter(pk=self.pk).update(progress=self.progress)

    def set_counters(self, text: str, counters: dict) -> None:
        self.progress, self.counters = text[:200], counters
        Operation.objects.filter(pk=self.pk).update(progress=self.progress, counters=counters)


class Event(models.Model):
    """One line of a service's history: who did what, when, and how it ended."""

    service = models.ForeignKey(Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    service_name = models.CharField(max_length=40, blank=True)
    operation = models.ForeignKey(Operation, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=40)
    message = models.TextField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices, default=Outcome.INFO)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["service", "-created"], name="event_service_created")]

    def __str__(self) -> str:
        return f"{self.service_name}: {self.message}"

    @classmethod
    def record(cls, service, action: str, message: str, outcome: str = Outcome.INFO, actor=None, operation=None):
        if actor is None and operation is not None:
            actor = operation.owner
        log.info("%s %s [%s] %s", service.name if service else "-", action, outcome, message)
        return cls.objects.create(
            service=service,
            service_name=service.name if service else "",
            operation=operation,
            actor=actor,
            action=action,
            message=message,
            outcome=outcome,
        )


class Backup(models.Model):
    """One backup of a data service in the backup store (services/backup_store.py): a PostgreSQL
    base backup (the WAL archived after it makes any later second restorable) or a Redis RDB."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="backups")
    created = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=10, choices=BackupKind.choices)
    # barman's backup id (PostgreSQL) or ours (Redis: the RDB's name in the store).
    backup_id = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=20, choices=BackupState.choices, default=BackupState.RUNNING)
    size = models.BigIntegerField(null=True, blank=True)
    begin_time = models.DateTimeField(null=True, blank=True)
    end_time = models.DateTimeField(null=True, blank=True)
    # None: not verified yet; True/False: restored into a scratch server and checked, or not.
    verified = models.BooleanField(null=True, blank=True)
    verification = models.TextField(blank=True)
    # Redis: keys at backup time; PostgreSQL: rows per table found by the verification.
    key_count = models.BigIntegerField(null=True, blank=True)
    table_counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"backup {self.pk} of {self.service}"

    @property
    def time(self):
        """The moment the backup holds the data of: its end (PostgreSQL) or its snapshot."""
        return self.end_time or self.created


def active_operations():
    return Operation.objects.filter(Q(state=OperationState.PENDING) | Q(state=OperationState.RUNNING))


class Quota(models.Model):
    """One user's quotas; an empty field means the installation's default (CONPAAS_QUOTA_*).

    The rules that read them are in services/quotas.py."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    services = models.PositiveIntegerField(
        null=True, blank=True, help_text="Services this user may own. Empty: CONPAAS_QUOTA_SERVICES."
    )
    nodes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Nodes of all the user's services together. Empty: CONPAAS_QUOTA_NODES."
    )
    environments = models.PositiveIntegerField(
        null=True, blank=True, help_text="Environments per service. Empty: CONPAAS_QUOTA_ENVIRONMENTS."
    )
    storage_mb = models.PositiveIntegerField(
        null=True,
        blank=True,
        verbose_name="storage (MB)",
        help_text="Stored code archives, in MB. Empty: CONPAAS_QUOTA_STORAGE_MB.",
    )

    def __str__(self) -> str:
        return f"quotas of {self.user}"


class ApiToken(AbstractAuthToken):
    """An API token: django-rest-knox's model (KNOX_TOKEN_MODEL), with an integer id users name it
    by and the time of its last use. The database keeps the token's SHA-512 `digest` and its first
    characters (`token_key`, knox's lookup index), never the token: it is shown once, when issued.

    The rules (issue, list, revoke, revoke on a password change) are in services/tokens.py."""

    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True)  # knox's primary key, here unique
    last_used = models.DateTimeField(null=True, blank=True)

    # Characters of the token shown to its owner to tell their tokens apart (of 64 random hex digits).
    PREFIX_LENGTH = 8
    # How stale `last_used` may get: one write a minute per token, not one per API call.
    LAST_USE_RESOLUTION = 60

    class Meta:
        verbose_name = "API token"
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user}"

    @property
    def prefix(self) -> str:
        return self.token_key[: self.PREFIX_LENGTH]

    def record_use(self) -> None:
        now = timezone.now()
        if self.last_used is None or (now - self.last_used).total_seconds() >= self.LAST_USE_RESOLUTION:
            self.last_used = now
            ApiToken.objects.filter(pk=self.pk).update(last_used=now)


class Link(models.Model):
    """`service` links `target`: its instances get the target's connection URL as a variable
    (docs/design.md, Runtimes): DATABASE_URL, REDIS_URL, or `<NAME>_URL` for a web service."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="links")
    target = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="linked_by")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "target"], name="link_unique_target")]
        ordering = ["target__name"]

    def __str__(self) -> str:
        return f"{self.service} → {self.target}"


class Bucket(models.Model):
    """A bucket of a storage service with the one S3 identity that reaches it (only it): made for
    a service linking the store (`holder`), or, with no `storage`, a bucket of the platform's own
    backup store holding `holder`'s backups (services/backup_store.py). The secret key
    is given to the holder's instances and to no page, event or log (services/object_storage.py).
    `object_count` and `size` are as the workers last counted them; pages read them, never the store."""

    storage = models.ForeignKey(Service, null=True, blank=True, on_delete=models.CASCADE, related_name="buckets")
    name = models.CharField(max_length=63)
    holder = models.ForeignKey(
        Service, null=True, blank=True, on_delete=models.SET_NULL, related_name="storage_buckets"
    )
    access_key = models.CharField(max_length=40, unique=True, editable=False)
    secret_key = models.CharField(max_length=64, editable=False)
    # Whether the store has it and its identity (set after both were pushed).
    granted = models.BooleanField(default=False, editable=False)
    object_count = models.PositiveBigIntegerField(default=0, editable=False)
    size = models.PositiveBigIntegerField(default=0, editable=False, help_text="Bytes stored.")
    counted = models.DateTimeField(null=True, blank=True, editable=False)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["storage", "name"], name="bucket_unique_name"),
            # NULLs differ in a unique index: the backup store's buckets need their own.
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(storage__isnull=True), name="backup_store_bucket_unique_name"
            ),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.storage or 'backup store'}/{self.name}"
