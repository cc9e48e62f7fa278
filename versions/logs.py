"""Recent log lines of an environment's instances, gathered from their nodes' agents, and the
logs of instances whose deploy failed, kept when they were retired."""

from conpaas_common.excerpts import excerpt
from services import agent
from services.choices import NodeState
from services.errors import NotFound
from versions.models import Environment, FailedInstanceLog, Instance, no_such_environment

MAX_LINES = 1000  # the agent's own bound (images/conpaas_agent/instances.py: MAX_LOG_LINES)
DEFAULT_LINES = 100
KEPT_LINES = 200  # of each log file of a failed instance
KEPT_PER_SERVICE = 20  # failed instances' logs kept per service, the newest
# What a failed deploy's error quotes: the last lines of the logs that say why (an access log
# only says that requests failed), stack frames shortened.
EXCERPT_LINES_PER_FILE = 12
EXCERPT_LINE_CHARS = 300
ACCESS_LOGS = ("access.log",)


def environment_logs(service, environment_name: str, lines: int = DEFAULT_LINES) -> dict:
    """The last `lines` lines of each log file of every instance of the environment's code
    version, on every node of the service that runs: `{environment, version, lines: [{node,
    instance, file, line}], errors, last_failure}`. Lines are in each file's order, instance by
    instance (nodes have no common clock to merge them by); a node that does not answer is one
    sentence in `errors`, and the others' lines are still there. `last_failure` says when a
    deploy into the environment last failed, whose logs `failed_logs` gives."""
    environment = Environment.objects.filter(service=service, name=environment_name).select_related("version").first()
    if environment is None:
        raise NotFound(no_such_environment(service, environment_name))
    found = {
        "environment": environment.name,
        "version": environment.version_id,
        "lines": [],
        "errors": [],
        "last_failure": last_failure(service, environment.name),
    }
    if environment.version_id is None:
        return found
    instances = Instance.objects.filter(
        node__service=service, node__state=NodeState.RUNNING, version_id=environment.version_id
    ).select_related("node")
    for instance in instances.order_by("node__name"):
        try:
            files = agent.client_for(instance.node, timeout=10).instance_logs(instance.name, lines)
        except agent.AgentError as exc:
            found["errors"].append(f"no logs of {instance.name}: {exc}")
            continue
        found["lines"] += log_lines(instance.node.name, instance.name, files)
    return found


def log_lines(node: str, instance: str, files: dict[str, list[str]]) -> list[dict]:
    return [
        {"node": node, "instance": instance, "file": file, "line": line}
        for file, file_lines in files.items()
        for line in file_lines
    ]


def last_failure(service, environment_name: str) -> dict | None:
    return summary(newest_failure(service, environment_name))


def summary(kept: FailedInstanceLog | None) -> dict | None:
    return {"version": kept.version_label, "at": kept.created} if kept else None


def newest_failure(service, environment_name: str) -> FailedInstanceLog | None:
    return FailedInstanceLog.objects.filter(service=service, environment=environment_name).first()


def failed_logs(service, environment_name: str, lines: int = DEFAULT_LINES) -> dict:
    """The kept logs of the instances of the last deploy into the environment that failed, in the
    shape of `environment_logs` (`version` null: nothing of it runs)."""
    if not Environment.objects.filter(service=service, name=environment_name).exists():
        raise NotFound(no_such_environment(service, environment_name))
    newest = newest_failure(service, environment_name)
    found = {"environment": environment_name, "version": None, "lines": [], "errors": []}
    found["last_failure"] = summary(newest)
    if newest is not None:
        same_failure = FailedInstanceLog.objects.filter(
            service=service,
            environment=environment_name,
            operation=newest.operation,
            version_label=newest.version_label,
        )
        for kept in same_failure.order_by("node_name", "id"):
            files = {file: file_lines[-lines:] for file, file_lines in kept.files}
            found["lines"] += log_lines(kept.node_name, kept.instance, files)
    return found


def keep_failed_logs(service, release, operation=None) -> str:
    """Keep the log files of `release`'s instances, about to be retired after its deploy failed,
    and return the last lines that say why (one instance's: all nodes run the same code), for
    the deploy's error; "" when no instance left any."""
    excerpt = ""
    for instance in release.instances().filter(node__service=service).select_related("node").order_by("node__name"):
        try:
            files = agent.client_for(instance.node, timeout=10).instance_logs(instance.name, KEPT_LINES)
        except agent.AgentError:
            continue  # it never started, or its node is gone: nothing to keep
        if not any(files.values()):
            continue
        FailedInstanceLog.objects.create(
            service=service,
            environment=release.environment.name,
            version_label=release.label,
            operation=operation,
            node_name=instance.node.name,
            instance=instance.name,
            files=list(files.items()),
        )
        excerpt = excerpt or why(files)
    stale = FailedInstanceLog.objects.filter(service=service).values_list("pk", flat=True)[KEPT_PER_SERVICE:]
    FailedInstanceLog.objects.filter(pk__in=list(stale)).delete()
    return excerpt


def why(files: dict[str, list[str]]) -> str:
    """The last lines of each log file but the access logs, repeats and stack frames left out,
    one file after another, each line named by its file."""
    out = []
    for file, file_lines in files.items():
        if file in ACCESS_LOGS:
            continue
        for line in excerpt(file_lines, EXCERPT_LINES_PER_FILE):
            line = line.rstrip()
            out.append(f"  {file}: {line[:EXCERPT_LINE_CHARS]}" + ("…" if len(line) > EXCERPT_LINE_CHARS else ""))
    return "\n".join(out)
