import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from services.models import Node, Service, slug_validator

PREVIEW_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{4,128}$")
preview_key_validator = RegexValidator(
    PREVIEW_KEY_RE, "A preview key is 4 to 128 letters, digits, dashes or underscores."
)


def not_production_key(key: str) -> None:
    # `conpaas-env=production` means production and clears the cookie (routing contract).
    if key.lower() == "production":
        raise ValidationError("'production' is reserved: it selects production itself.")


label_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$", "A label is up to 40 letters, digits, dots, dashes or underscores."
)

PRODUCTION = "production"
DEVELOPMENT = "development"


def new_preview_key() -> str:
    return secrets.token_urlsafe(18)


class CodeVersion(models.Model):
    """An immutable uploaded archive, stored once per content (by sha256)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="versions")
    label = models.CharField(max_length=40, validators=[label_validator])
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=10)  # zip | tar.gz | war
    entry_point = models.CharField(max_length=200, blank=True)
    # Run once before the version enters an environment (workflows/deploy.py); from the manifest's
    # `release:` or the archive's Procfile `release:` line. Empty: none.
    release_command = models.CharField(max_length=1000, blank=True)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["service", "label"], name="version_unique_label")]
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return self.label

    @property
    def archive_path(self):
        return archive_path(self.sha256, self.kind)

    def in_use(self) -> bool:
        return self.environments.exists()


def archive_path(sha256: str, kind: str):
    return settings.CONPAAS_ARCHIVES / f"{sha256}.{'tar.gz' if kind == 'tar.gz' else 'zip'}"


class Environment(models.Model):
    """A named slot of a service pointing at the code version it serves."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=40, validators=[slug_validator])
    version = models.ForeignKey(
        CodeVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="environments"
    )
    preview_key = models.CharField(
        max_length=128, null=True, blank=True, validators=[preview_key_validator, not_production_key]
    )
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(default=timezone.now)
    # The last health verdict the workers saved (routing/health.py): the problems of
    # `health_version` on the routers (an empty list: healthy), and when they were checked.
    # None: never checked. A verdict about another version than `version` is no verdict.
    health_problems = models.JSONField(null=True, blank=True, editable=False)
    health_checked = models.DateTimeField(null=True, blank=True, editable=False)
    health_version = models.ForeignKey(
        CodeVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "name"], name="environment_unique_name"),
            models.UniqueConstraint(fields=["service", "preview_key"], name="environment_unique_preview_key"),
        ]
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return f"{self.service.name}/{self.name}"

    @property
    def is_production(self) -> bool:
        return self.name == PRODUCTION

    def clean(self):
        errors = {}
        others = Environment.objects.filter(service_id=self.service_id).exclude(pk=self.pk)
        if self.service_id and others.filter(name=self.name).exists():
            errors["name"] = f"{self.service.name} already has an environment named {self.name}"
        if self.is_production and self.preview_key:
            errors["preview_key"] = "production is served without a key; it has no preview key"
        elif self.preview_key and others.filter(preview_key=self.preview_key).exists():
            errors["preview_key"] = "another environment of this service uses that preview key"
        if errors:
            raise ValidationError(errors)

    def validate(self) -> None:
        """Every rule of an environment, field-keyed; the uniqueness rules are clean()'s."""
        self.full_clean(exclude=["version"], validate_unique=False, validate_constraints=False)

    @property
    def stored_problems(self) -> list[str] | None:
        """The saved health problems of the version this environment serves; None: not checked
        (never, or only an earlier version was)."""
        if self.version_id is None or self.health_checked is None or self.health_version_id != self.version_id:
            return None
        return list(self.health_problems or [])

    def health_fields(self) -> dict:
        """The saved verdict as update() keywords: a swap moves it with the version it is about."""
        return {
            "health_problems": self.health_problems,
            "health_checked": self.health_checked,
            "health_version": self.health_version_id,
        }

    @property
    def preview_url(self) -> str | None:
        return preview_url(self.service.url, self.name, self.preview_key)


def preview_url(url: str | None, name: str, preview_key: str | None) -> str | None:
    """An environment's link: the service's URL, with the preview key unless it is production."""
    if not url or name == PRODUCTION or not preview_key:
        return url
    return f"{url}?conpaas-env={preview_key}"


class InstanceState(models.TextChoices):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


class Instance(models.Model):
    """One running copy of one code version on one backend node."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="instances")
    # A version is not deleted while it runs somewhere (its process would be orphaned on the node);
    # deleting its service deletes both, through the nodes.
    version = models.ForeignKey(CodeVersion, on_delete=models.RESTRICT, related_name="instances")
    port = models.PositiveIntegerField(null=True, blank=True)
    # How many requests it serves at once, as its agent reports: the router queues the rest.
    concurrency = models.PositiveIntegerField(null=True, blank=True)
    # What the agent was asked to run; sent again unchanged so a re-run never restarts it.
    spec = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=20, choices=InstanceState.choices, default=InstanceState.STARTING)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["node", "version"], name="instance_unique_version")]
        ordering = ["created", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{self.node.name}-v{self.version_id}"
