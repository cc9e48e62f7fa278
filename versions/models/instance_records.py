"""The records of instances: which release runs on which backend node (Instance), and the logs kept
of instances that failed their deploy. Asking a node to run them is versions/instances.py."""

from django.db import models
from django.utils import timezone

from services.models import Node, Service
from versions.models.code_versions import CodeVersion
from versions.models.environment_settings import backend_key


class InstanceState(models.TextChoices):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


class Instance(models.Model):
    """One running copy of one release (a code version with its settings) on one backend node."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="instances")
    # A version is not deleted while it runs somewhere (its process would be orphaned on the node);
    # deleting its service deletes both, through the nodes.
    version = models.ForeignKey(CodeVersion, on_delete=models.RESTRICT, related_name="instances")
    settings_key = models.CharField(max_length=16, blank=True, default="")
    port = models.PositiveIntegerField(null=True, blank=True)
    # How many requests it serves at once, as its agent reports: the router queues the rest.
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    # What the agent was asked to run; sent again unchanged so a re-run never restarts it.
    spec = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=InstanceState.choices, default=InstanceState.STARTING)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "version", "settings_key"], name="instance_unique_release")
        ]
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def backend(self) -> str:
        return backend_key(self.version_id, self.settings_key)

    @property
    def name(self) -> str:
        return f"{self.node.name}-v{self.backend}"


class FailedInstanceLog(models.Model):
    """The log files of an instance whose release failed its deploy, kept when it was retired:
    `conpaas logs SERVICE ENV --failed` reads them after the instance and its node may be gone."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="failed_logs")
    environment = models.CharField(max_length=40)
    version_label = models.CharField(max_length=40)
    operation = models.ForeignKey(
        "services.Operation", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    node_name = models.CharField(max_length=80)
    instance = models.CharField(max_length=120)
    # [[log file name, its last lines], ...] in the runtime's order (a JSON object's keys lose it
    # in PostgreSQL's jsonb).
    files = models.JSONField(default=list)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.instance} ({self.environment}, failed {self.created:%Y-%m-%d %H:%M})"
