"""Recent log lines of an environment's instances, gathered from their nodes' agents."""

from services import agent
from services.choices import NodeState
from services.errors import NotFound
from versions.models import Environment, Instance, no_such_environment

MAX_LINES = 1000  # the agent's own bound (images/conpaas_agent/instances.py: MAX_LOG_LINES)
DEFAULT_LINES = 100


def environment_logs(service, environment_name: str, lines: int = DEFAULT_LINES) -> dict:
    """The last `lines` lines of each log file of every instance of the environment's code
    version, on every node of the service that runs: `{environment, version, lines: [{node,
    instance, file, line}], errors}`. Lines are in each file's order, instance by instance
    (nodes have no common clock to merge them by); a node that does not answer is one sentence
    in `errors`, and the others' lines are still there."""
    environment = Environment.objects.filter(service=service, name=environment_name).select_related("version").first()
    if environment is None:
        raise NotFound(no_such_environment(service, environment_name))
    found = {"environment": environment.name, "version": environment.version_id, "lines": [], "errors": []}
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
        for file, file_lines in files.items():
            found["lines"] += [
                {"node": instance.node.name, "instance": instance.name, "file": file, "line": line}
                for line in file_lines
            ]
    return found
