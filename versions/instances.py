"""Instances: what a backend node is asked to run for a code version, and asking it to run it."""

from django.core import signing
from django.urls import reverse

from services import agent
from services.choices import NodeState, Outcome
from services.errors import OperationFailed
from services.models import Event
from versions.models import CodeVersion, Environment, Instance, InstanceState

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


def instance_spec(service, version: CodeVersion, environment: Environment) -> dict:
    return {
        "version": str(version.pk),
        "label": version.label,
        "runtime": service.runtime,
        "entry_point": version.entry_point,
        "archive_url": archive_url(version),
        "archive_sha256": version.sha256,
        "env": {"CONPAAS_ENV": environment.name, "CONPAAS_SERVICE": service.name},
    }


def ensure_instances(service, version: CodeVersion, environment: Environment, operation=None) -> None:
    """Run `version` on every running backend node (idempotent: a running instance is left alone)."""
    for node in service.backend_node_list().filter(state=NodeState.RUNNING):
        instance, created = Instance.objects.get_or_create(node=node, version=version)
        if created or not instance.spec:
            instance.spec = instance_spec(service, version, environment)
        else:
            instance.spec["archive_url"] = archive_url(version)  # the old link may have expired
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
                f"restarted {instance.name}: it was not running"
                if restarted
                else f"started {version.label} on {node.name}"
            )
            Event.record(service, "instance.start", message, Outcome.SUCCEEDED, operation=operation)
