"""Instances: what a backend node is asked to run for a code version, and asking it to run it (their
records, the Instance rows: versions/models/instance_records.py)."""

import ipaddress
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.urls import reverse

from services import agent, database_copies, object_storage
from services.choices import LINK_REPLICA_VARIABLES, LINK_VARIABLES, STORAGE_LINK_VARIABLES, NodeState, Outcome, Runtime
from services.errors import Conflict, OperationFailed
from services.models import Event
from versions.builds import build_fields, ensure_build
from versions.models import (
    CodeVersion,
    Environment,
    Instance,
    InstanceState,
    backend_key,
    clean_settings,
    setting_values,
    settings_key,
)

ARCHIVE_SALT = "conpaas.archive"
ARCHIVE_URL_MAX_AGE = 3600


def archive_url(version: CodeVersion) -> str:
    """A signed path: each node joins it to the control plane's URL as that node reaches it."""
    token = signing.dumps(version.pk, salt=ARCHIVE_SALT)
    return reverse("version-archive", args=[token])


def version_from_token(token: str) -> CodeVersion | None:
    try:
        pk = signing.loads(token, salt=ARCHIVE_SALT, max_age=ARCHIVE_URL_MAX_AGE)
    except signing.BadSignature:
        return None
    return CodeVersion.objects.filter(pk=pk).first()


@dataclass(frozen=True)
class Release:
    """What an environment runs: a code version with the environment's setting values and its
    database copies (link variable -> copy name). Instances are per release: two environments
    share instances only when they run one version with the same values and no copies."""

    version: CodeVersion
    environment: Environment  # its name is the instances' CONPAAS_ENV
    values: dict = field(default_factory=dict)
    copies: dict = field(default_factory=dict)

    @classmethod
    def of(cls, environment: Environment, version: CodeVersion | None = None, settings_=None) -> "Release":
        """`environment`'s release: its version and settings, or those given (a deploy or a swap
        about to put them there)."""
        copies = {link_variable(copy.target): copy.name for copy in environment.database_copies.all()}
        values = setting_values(environment.settings if settings_ is None else settings_)
        return cls(version or environment.version, environment, values, copies)

    @property
    def key(self) -> str:
        return settings_key(self.values, self.copies)

    @property
    def backend(self) -> str:
        return backend_key(self.version.pk, self.key)

    @property
    def label(self) -> str:
        return self.version.label

    def instances(self):
        return Instance.objects.filter(version=self.version, settings_key=self.key)


def serving_releases(service) -> list[Release]:
    """What the environments serve, each release once (two environments may share one)."""
    environments = Environment.objects.filter(service=service).exclude(version=None).select_related("version")
    releases = {}
    for environment in environments:
        release = Release.of(environment)
        releases.setdefault(release.backend, release)
    return list(releases.values())


def instance_spec(service, release: Release) -> dict:
    return {
        "version": str(release.version.pk),
        "label": release.version.label,
        "runtime": service.runtime,
        "archive_url": archive_url(release.version),
        "archive_sha256": release.version.sha256,
        "env": instance_environment(service, release),
        "routers": router_addresses(service),
        **build_fields(release.version),
        **runtime_fields(service, release.version),
    }


def instance_environment(service, release: Release, own: dict | None = None) -> dict[str, str]:
    """An instance's variables: the platform's own (`own`, kept from when it started), the links
    (a database copy in place of the linked database), then the settings."""
    own = own or {"CONPAAS_ENV": release.environment.name, "CONPAAS_SERVICE": service.name}
    return {**own, **link_environment(service, release.copies), **release.values}


class LinkNotReady(OperationFailed):
    """A linked service has no address yet (it is still being created)."""


def checked_settings(service, raw: dict) -> dict:
    """Settings as a client writes them, in their stored form (versions.models.clean_settings),
    none replacing a link's variable; ValidationError otherwise."""
    cleaned = clean_settings(raw)
    refuse_linked_names(service, cleaned)
    return cleaned


def refuse_linked_names(service, wanted: dict) -> None:
    """A setting may not replace what a link gives (DATABASE_URL, or an environment's copy of it;
    a storage service's S3_* and AWS_* variables)."""
    linked = {}
    for link in service.links.select_related("target"):
        names = STORAGE_LINK_VARIABLES if link.target.runtime == Runtime.STORAGE else (link_variable(link.target),)
        linked.update(dict.fromkeys(names, link.target.name))
    clashes = [
        f"{name}: set by the link to {linked[name]}; a setting cannot replace it" for name in wanted if name in linked
    ]
    if clashes:
        raise ValidationError({"settings": clashes})


def link_variable(target) -> str:
    return LINK_VARIABLES.get(target.runtime) or f"{target.name.upper().replace('-', '_')}_URL"


def link_environment(service, copies: dict[str, str] | None = None) -> dict[str, str]:
    """The variables `service`'s instances get from the services it links: each target's
    connection URL (a data service's connection_url(), a web service's production URL), or the
    URL of an environment's copy of it (`copies`: variable -> copy name)."""
    env, copies = {}, copies or {}
    for link in service.links.select_related("target__owner"):
        target = link.target
        variable = link_variable(target)
        if target.runtime == Runtime.STORAGE:
            env.update(storage_environment(service, target))
            continue
        if variable in copies:
            url = database_copies.copy_url(target, copies[variable])
        else:
            url = target.connection_url() if target.runtime in LINK_VARIABLES else router_url(target)
        if not url:
            raise LinkNotReady(f"the linked service {target.name} has no address yet")
        env[variable] = url
        if variable not in copies and (replicas := target.replica_url()):
            env[LINK_REPLICA_VARIABLES[target.runtime]] = replicas
    return env


def storage_environment(service, target) -> dict[str, str]:
    """A linked storage service's variables: `service`'s own bucket in it, made at its first use."""
    try:
        credentials = object_storage.grant_bucket(target, object_storage.bucket_for(service), holder=service)
    except (Conflict, OperationFailed) as exc:
        raise LinkNotReady(f"the linked storage service {target.name}: {exc}") from None
    return credentials.environment()


def router_addresses(service) -> list[str]:
    """The addresses the service's routers reach its instances from: the instances believe their
    X-Forwarded-* headers and no one else's."""
    addresses = service.proxy_nodes().values_list("address", flat=True)
    return sorted({address for address in addresses if is_ip_address(address)})


def is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def router_url(target) -> str | None:
    """A web service as other nodes reach it: its router's own address (a published address or
    host name is for users outside; a node's firewall lets it reach other routers directly)."""
    proxy = target.proxy_nodes().filter(state=NodeState.RUNNING).first()
    return f"http://{proxy.address}:{proxy.http_port}/" if proxy else None


def runtime_fields(service, version: CodeVersion) -> dict:
    """The fields of the spec that only one runtime takes (the agent's recipe refuses others)."""
    if service.runtime == Runtime.PYTHON:
        return {"entry_point": version.entry_point}  # found by the archive rulebook at upload
    if service.runtime == Runtime.PHP:
        return {"max_upload_mb": settings.CONPAAS_MAX_UPLOAD_MB}  # a site takes what the platform does
    if service.runtime == Runtime.JAVA:
        return {"heap_mb": service.java_heap_mb}
    return {}


def ensure_instances(service, release: Release, operation=None) -> int:
    """Run `release` on every running backend node (idempotent: a running instance is left alone);
    returns how many instances were started or started again."""
    started_count, version = 0, release.version
    ensure_build(service, version, operation)  # made at its first deploy: a lookup
    for node in service.backend_node_list().filter(state=NodeState.RUNNING):
        instance, created = Instance.objects.get_or_create(node=node, version=version, settings_key=release.key)
        if created or not instance.spec:
            instance.spec = instance_spec(service, release)
        else:
            # The old links may have expired; a version deployed before it had builds gets one.
            instance.spec.update(archive_url=archive_url(version), **build_fields(version))
            # Links added, removed or moved: the agent restarts an instance whose spec changed.
            own = {k: v for k, v in instance.spec.get("env", {}).items() if k.startswith("CONPAAS_")}
            instance.spec["env"] = instance_environment(service, release, own)
            if "routers" in instance.spec:
                # A router moved: the agent starts the instance again, trusting the new one. An
                # instance started before the field keeps running (its router's headers unbelieved)
                # until its version is deployed again, rather than all restarting at an upgrade.
                instance.spec["routers"] = router_addresses(service)
        began = time.monotonic()
        try:
            started = agent.client_for(node).put_instance(instance.name, instance.spec)
        except agent.AgentError as exc:
            instance.state, instance.error = InstanceState.FAILED, str(exc)
            instance.save()
            # The agent's own sentence: the node is named once, and no HTTP status code for the user.
            reason = exc.detail if exc.status else str(exc)
            raise OperationFailed(f"{version.label} could not start on node {node.name}: {reason}") from exc
        # The agent starts again an instance that is not running, on a new port.
        restarted = not created and instance.port is not None and started["port"] != instance.port
        instance.port, instance.state, instance.error = started["port"], InstanceState.RUNNING, ""
        instance.concurrency = started.get("concurrency")
        instance.save()
        if created or restarted:
            message = (
                f"restarted {instance.name}: it was not running (in {time.monotonic() - began:.1f} s)"
                if restarted
                else f"started {version.label} on {node.name}"
                + (f" for {release.environment.name}" if release.key else "")
            )
            Event.record(service, "instance.start", message, Outcome.SUCCEEDED, operation=operation)
            started_count += 1
    return started_count
