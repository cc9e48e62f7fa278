"""Storage services' nodes: the first runs the store's master, filer and S3 gateway, every further
one a volume server joining it; from 2 nodes every object is kept on 2 of them
(services/object_storage.py: replicate)."""

from services import agent, object_storage
from services.choices import NodeState, Outcome
from services.errors import OperationFailed
from services.models import Event, Node, Service
from services.nodes import boot_node

# The instance names of a store's servers on their nodes.
MASTER, VOLUME = "server", "volume"


def ensure_store(service: Service, operation) -> Node:
    """Boot what is missing of the service's `backend_nodes`, start (or find running) each node's
    server, and replicate when there are 2 or more. Returns the first node."""
    nodes = list(service.live_nodes().filter(is_backend=True).exclude(state=NodeState.FAILED))
    first = next((node for node in nodes if node.data_port), nodes[0] if nodes else None)
    if first is None:
        operation.set_progress("booting the store's first node")
        first = boot_node(service, ["backend"], operation)
    operation.set_progress("starting the S3 gateway")
    spec = {
        "runtime": "storage",
        "role": "master",
        "password": service.password,
        "access_key": object_storage.admin_access_key(service),
    }
    instance = put(first, MASTER, spec)
    Node.objects.filter(pk=first.pk).update(data_port=instance["port"])
    first.data_port = instance["port"]
    object_storage.record_details(first, instance)
    master = first.data_details.get("master")
    if not master:
        raise OperationFailed(f"the S3 gateway on {first.name} did not say where its master is")
    while (count := service.backend_node_list().count()) < service.backend_nodes:
        operation.set_progress(f"booting storage node {count + 1} of {service.backend_nodes}")
        boot_node(service, ["backend"], operation)
    volumes = list(object_storage.volume_nodes(service))
    for node in volumes:
        operation.set_progress(f"starting the volume server on {node.name}")
        instance = put(node, VOLUME, {"runtime": "storage", "role": "volume", "master": master})
        object_storage.record_details(node, {"details": {"volume_port": instance["port"]}})
    operation.set_progress("setting the buckets' replication")
    done = object_storage.replicate(service, 1 + len(volumes))
    if volumes:
        Event.record(service, "storage.replication", done, Outcome.SUCCEEDED, operation=operation)
    return first


def put(node: Node, name: str, spec: dict) -> dict:
    try:
        return agent.client_for(node).put_instance(name, spec)
    except agent.AgentError as exc:
        raise OperationFailed(f"the storage server did not start on {node.name}: {exc.detail}") from None
