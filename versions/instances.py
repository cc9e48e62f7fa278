"""Instances: what a backend node is asked to run for a code version, and asking it to run it."""

import time

from django.conf import settings
from django.core import signing
from django.urls import reverse

from services import agent
from services.choices import LINK_VARIABLES, NodeState, Outcome, Runtime
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
        "archive_url": archive_url(version),
        "archive_sha256": version.sha256,
        "env": {"CONPAAS_ENV": environment.name, "CONPAAS_SERVICE": service.name, **link_environment(service)},
        **runtime_fields(service, version),
    }


class LinkNotReady(OperationFailed):
    """A linked service has no address yet (it is still being created)."""


def link_variable(target) -> str:
    return LINK_VARIABLES.get(target.runtime) or f"{target.name.upper().replace('-', '_')}_URL"


def link_environment(service) -> dict[str, str]:
    """The variables `service`'s instances get from the services it links: each target's
    connection URL (a data service's connection_url(), a web service's production URL)."""
    env = {}
    for link in service.links.select_related("target__owner"):
        target = link.target
        url = target.connection_url() if target.runtime in LINK_VARIABLES else router_url(target)
        if not url:
            raise LinkNotReady(f"the linked service {target.name} has no address yet")
        env[link_variable(target)] = url
    return env


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


def ensure_instances(service, version: CodeVersion, environment: Environment, operation=None) -> int:
    """Run `version` on every running backend node (idempotent: a running instance is left alone);
    returns how many instances were started or started again."""
    started_count = 0
    links = link_environment(service)
    for node in service.backend_node_list().filter(state=NodeState.RUNNING):
        instance, created = Instance.objects.get_or_create(node=node, version=version)
        if created or not instance.spec:
            instance.spec = instance_spec(service, version, environment)
        else:
            instance.spec["archive_url"] = archive_url(version)  # the old link may have expired
            # Links added, removed or moved: the agent restarts an instance whose spec changed.
            own = {k: v for k, v in instance.spec.get("env", {}).items() if k.startswith("CONPAAS_")}
            instance.spec["env"] = {**own, **links}
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
            )
            Event.record(service, "instance.start", message, Outcome.SUCCEEDED, operation=operation)
            started_count += 1
    return started_count
