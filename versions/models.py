import hashlib
import json
import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from services.errors import no_such
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


def no_such_environment(service, name: str) -> str:
    """`service` has no environment `name`: the sentence, with the ones it has (oldest first)."""
    return no_such("environment named", name, service.environments.values_list("name", flat=True), service.name)


# An environment's settings: {NAME: {"value": str, "sticky": bool}}. A sticky setting stays with
# its environment on a swap (a staging database URL); a travelling one follows the code version.
SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
SETTING_VALUE_MAX = 4096
MAX_SETTINGS = 100
# What the platform and the runtimes set themselves: a setting may not replace them.
RESERVED_SETTINGS = frozenset({"PATH", "HOME", "PORT", "LANG", "LC_ALL", "PYTHONPATH", "JAVA_HOME", "CATALINA_BASE"})


def clean_settings(raw) -> dict[str, dict]:
    """Settings as a client writes them (`NAME: value` or `NAME: {value, sticky}`), checked and in
    their stored form; ValidationError keyed by each wrong setting's name."""
    if not isinstance(raw, dict):
        raise ValidationError({"settings": "an object of NAME: value (or NAME: {value, sticky})"})
    if len(raw) > MAX_SETTINGS:
        raise ValidationError({"settings": f"at most {MAX_SETTINGS} settings"})
    clean, errors = {}, {}
    for name, given in raw.items():
        if not isinstance(name, str) or not SETTING_NAME_RE.match(name):
            errors[str(name)] = "a setting's name is letters, digits and underscores, not starting with a digit"
            continue
        if name.upper().startswith("CONPAAS_") or name in RESERVED_SETTINGS:
            errors[name] = (
                "names starting with CONPAAS_ are the platform's"
                if name.upper().startswith("CONPAAS_")
                else f"{name} is set by the platform itself"
            )
            continue
        sticky = False
        if isinstance(given, dict):
            unknown = set(given) - {"value", "sticky"}
            if unknown:
                errors[name] = f"unknown key '{sorted(unknown)[0]}' (a setting has value and sticky)"
                continue
            sticky, given = given.get("sticky", False), given.get("value")
            if not isinstance(sticky, bool):
                errors[name] = "sticky is true or false"
                continue
        if isinstance(given, bool) or not isinstance(given, str | int | float):
            errors[name] = "the value is a string (or a number)"
            continue
        value = str(given)
        if len(value) > SETTING_VALUE_MAX or "\0" in value:
            errors[name] = f"the value is at most {SETTING_VALUE_MAX} characters, with no NUL"
            continue
        clean[name] = {"value": value, "sticky": sticky}
    if errors:
        raise ValidationError({f"settings.{name}": message for name, message in errors.items()})
    return dict(sorted(clean.items()))


def setting_problems(error: ValidationError) -> list[str]:
    """clean_settings' refusal as sentences, each naming its setting (`9X: a setting's name ...`)."""
    if not hasattr(error, "error_dict"):
        return list(error.messages)
    return [
        f"{key.removeprefix('settings.')}: {message}" if key != "settings" else message
        for key, messages in error.message_dict.items()
        for message in messages
    ]


def setting_values(settings_: dict[str, dict]) -> dict[str, str]:
    return {name: setting["value"] for name, setting in settings_.items()}


def swapped_settings(production: dict, other: dict) -> tuple[dict, dict]:
    """The settings of production and of the other environment after they swap: each keeps its
    sticky settings and takes the other's travelling ones. A name sticky in either environment
    stays put in both (as a slot setting does), so no value is lost and swapping back restores
    both environments exactly."""
    sticky = {name for settings_ in (production, other) for name, s in settings_.items() if s["sticky"]}

    def after(own: dict, incoming: dict) -> dict:
        kept = {name: s for name, s in own.items() if name in sticky}
        travelling = {name: s for name, s in incoming.items() if name not in sticky}
        return dict(sorted({**travelling, **kept}.items()))

    return after(production, other), after(other, production)


def changed_settings(before: dict, after: dict) -> list[str]:
    """The names of the settings added, removed, or changed in value or stickiness, sorted.
    What deploy, applying and swap report: names only, since values may be secrets."""
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def settings_key(values: dict[str, str], copies: dict[str, str]) -> str:
    """A short fingerprint of what an instance gets besides its code (its environment's setting
    values and database copies); empty when it gets nothing, so plain versions keep their names."""
    if not values and not copies:
        return ""
    text = json.dumps({"settings": values, "copies": copies}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def backend_key(version_id: int, key: str) -> str:
    """The routers' name of a release's backend: the version's id, and the settings' fingerprint."""
    return f"{version_id}-{key}" if key else str(version_id)


class Build(models.Model):
    """What code versions need besides their archive (python packages, a composer vendor/), made
    once per owner and inputs (versions/builds.py) and stored at `path`: a tar.gz whose sha256
    nodes check. Versions with the same requirements share one."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=64)  # the digest of its inputs (images/conpaas_agent/builds.py)
    kind = models.CharField(max_length=10)  # pip | composer
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    seconds = models.FloatField()
    summary = models.CharField(max_length=500, blank=True)  # what the installer said it installed
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="build_unique_key")]

    def __str__(self) -> str:
        return f"{self.kind} build {self.key[:12]}"

    @property
    def path(self):
        return build_path(self.key)


def build_path(key: str):
    return settings.CONPAAS_BUILDS / f"{key}.tar.gz"


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
    # Its build, made at its first deploy; `needs_build` False once that deploy found it needs none.
    build = models.ForeignKey(Build, null=True, blank=True, on_delete=models.PROTECT, related_name="versions")
    needs_build = models.BooleanField(null=True, blank=True)

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
