"""Environments (a named slot of a service pointing at a code version), their preview keys and
links, and their own copies of the linked databases."""

import re
import secrets

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from services.errors import no_such
from services.models import Service, slug_validator
from versions.models.code_versions import CodeVersion
from versions.models.environment_settings import backend_key

PREVIEW_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{4,128}$")
preview_key_validator = RegexValidator(
    PREVIEW_KEY_RE, "A preview key is 4 to 128 letters, digits, dashes or underscores."
)


def not_production_key(key: str) -> None:
    # `conpaas-env=production` means production and clears the cookie (routing contract).
    if key.lower() == "production":
        raise ValidationError("'production' is reserved: it selects production itself.")


PRODUCTION = "production"
DEVELOPMENT = "development"


def new_preview_key() -> str:
    return secrets.token_urlsafe(18)


def no_such_environment(service, name: str) -> str:
    """`service` has no environment `name`: the sentence, with the ones it has (oldest first)."""
    return no_such("environment named", name, service.environments.values_list("name", flat=True), service.name)


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
    # What the environment runs its version with (clean_settings' form), and their fingerprint
    # (settings_key): the instances it is routed to. Both change only with the route: a deploy or
    # a swap saves them when it flips, so they always describe what serves.
    settings = models.JSONField(default=dict, blank=True)
    settings_key = models.CharField(max_length=16, blank=True, default="", editable=False)
    # Its own copy of each database the service links, made from production's at its deploys.
    database_copy = models.BooleanField(default=False)
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

    @property
    def backend(self) -> str | None:
        """The routers' backend this environment is routed to (None: no version)."""
        return backend_key(self.version_id, self.settings_key) if self.version_id else None


def preview_url(url: str | None, name: str, preview_key: str | None) -> str | None:
    """An environment's link: the service's URL, with the preview key unless it is production."""
    if not url or name == PRODUCTION or not preview_key:
        return url
    return f"{url}?conpaas-env={preview_key}"


class DatabaseCopy(models.Model):
    """An environment's own copy of a database its service links (on the linked service's server),
    made from production's; dropped with the environment."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="database_copies")
    target = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="copies_of_it")
    # The copy on the target's server: a PostgreSQL database name, a Redis database index.
    name = models.CharField(max_length=63)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["environment", "target"], name="database_copy_unique_target"),
            models.UniqueConstraint(fields=["target", "name"], name="database_copy_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.environment} copy of {self.target.name}"
