"""Scaling the backend role: add nodes running every version in use, or drain and remove nodes."""

from django.db import transaction

from routing.health import wait_healthy
from routing.table import push
from services import operations, quotas
from services import replication as replicated
from services.choices import REPLICATED_RUNTIMES, NodeState, OperationKind, Runtime
from services.errors import Conflict, OperationFailed
from services.models import Operation, Service
from services.nodes import boot_node, destroy_node
from versions.instances import ensure_instances, serving_releases
from versions.models import Instance, InstanceState
from workflows import replication
from workflows.storage import ensure_store


def scale(operation) -> str:
    service = operation.service
    if service.runtime == Runtime.STORAGE:
        ensure_store(service, operation)
        return f"{service.backend_node_list().count()} storage node(s) running"
    if service.is_data:
        return replication.converge(service, operation)
    if operation.params.get("role") == "proxy":
        return "one proxy node runs, as this release supports"  # the API accepts only 1 for proxy
    wanted = int(operation.params["nodes"])
    # A node that failed to boot holds no instance and counts for nothing: remove it first.
    for node in service.live_nodes().filter(state=NodeState.FAILED):
        destroy_node(node, operation)
    releases = serving_releases(service)
    while (count := service.backend_node_list().count()) < wanted:
        operation.set_progress(f"booting backend node {count + 1} of {wanted}")
        boot_node(service, ["backend"], operation)
        for release in releases:
            ensure_instances(service, release, operation)
        push(service)
        for release in releases:
            wait_healthy(service, release)
    while (count := service.backend_node_list().count()) > wanted:
        # Backend-only nodes go first, newest first; the node that also routes goes last.
        node = service.backend_node_list().order_by("is_proxy", "-created").first()
        if node.is_proxy:
            raise OperationFailed("the last backend node also runs the router; a service keeps at least one")
        operation.set_progress(f"draining node {node.name} ({count} → {wanted})")
        Instance.objects.filter(node=node).update(state=InstanceState.STOPPING)
        push(service)
        destroy_node(node, operation)
    return f"{wanted} backend node(s) running"


def request_scale(service: Service, role: str, nodes: int, user) -> Operation:
    if service.runtime == Runtime.STORAGE and role != "backend":
        raise Conflict(f"a storage service has no router: scale its backend nodes ({service.name})")
    if service.runtime == Runtime.STORAGE and nodes < service.live_nodes().filter(is_backend=True).count():
        # A node's volumes would have to be moved off it first (weed shell volume.server.evacuate).
        raise Conflict(f"a storage service does not shrink in this release: {service.name} keeps its nodes")
    if service.is_data and service.runtime not in (Runtime.STORAGE, *REPLICATED_RUNTIMES):
        raise Conflict(f"a {service.runtime} service runs one server on one node: it does not scale in this release")
    if service.runtime in REPLICATED_RUNTIMES:
        if role != "backend":
            raise Conflict(f"a {service.runtime} service has one router: scale its server nodes (role backend)")
        if problem := replicated.servers_problem(service.runtime, nodes):
            raise Conflict(problem)
    with transaction.atomic():
        quotas.lock(service.owner)
        if role == "backend":
            # The service's proxy node is also a backend node: after the scale it holds `nodes`,
            # plus any proxy-only node.
            proxy_only = service.live_nodes().filter(is_proxy=True, is_backend=False).count()
            quotas.check_nodes(service.owner, service, nodes + proxy_only)
            Service.objects.filter(pk=service.pk).update(backend_nodes=nodes)
        return operations.start(
            service,
            OperationKind.SCALE,
            user,
            {"role": role, "nodes": nodes},
            message=f"scale {role} to {nodes} node(s) requested",
        )
