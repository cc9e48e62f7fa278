"""Code versions (immutable uploaded archives, stored once by content) and the builds they share."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from services.models import Service

label_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$", "A label is up to 40 letters, digits, dots, dashes or underscores."
)


class Build(models.Model):
    """What code versions need besides their archive (python packages, a composer vendor/), made
    once per owner and inputs (versions/builds.py) and stored at `path`: a tar.gz whose sha256
    nodes check. Versions with the same requirements share one."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=64)  # the digest of its inputs (versions/builds.py)
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
