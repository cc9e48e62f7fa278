"""Data services' work: their server at creation, and loading a dump as an operation."""

import os

from django.conf import settings

from services import operations
from services.choices import OperationKind, Runtime, ServiceState
from services.data_servers import DumpRefused, Server, dump_format, load, remove_dump, start_server, store_dump
from services.errors import Conflict
from services.models import Operation, Service
from services.nodes import boot_node
from workflows import replication
from workflows.storage import ensure_store


def dumps_dir() -> str:
    return os.path.join(settings.CONPAAS_HOME, "dumps")


def ensure_server(service: Service, operation):
    """A data service runs its server and no code version. Its node is booted when it has none
    (at creation; after 'manage.py down', empty), and the server started when it is not running
    (the agent leaves a running one alone). Returns the node. A storage service's nodes are
    workflows/storage.py's; a replicated service (a router in front of its servers) is
    workflows/replication.py's, which a service made before routers has not."""
    if service.runtime == Runtime.STORAGE:
        return ensure_store(service, operation)
    if service.is_routed:
        replication.converge(service, operation)
        return service.server_node()
    node = service.live_nodes().filter(is_backend=True, scratch=False).exclude(state="failed").first()
    if node is None:
        operation.set_progress("booting the server's node")
        node = boot_node(service, ["backend"], operation)
    operation.set_progress(f"starting the {service.runtime} server")
    start_server(service, node)
    return node


def request_load(service: Service, user, fileobj, filename: str = "") -> Operation:
    """Check the dump and hand it to the workers; a refused dump stores nothing."""
    if not service.is_data:
        what = f"{service.name} is a {service.runtime} service"
        raise Conflict(f"{what}: only postgresql, redis and mysql services load dumps")
    if service.state == ServiceState.FAILED:
        raise Conflict(f"{service.name} failed to start: no server to load into")
    path = store_dump(fileobj, dumps_dir())
    try:
        fmt = dump_format(path, service.runtime)
        size = os.path.getsize(path)
        shown = f" {filename}" if filename else ""
        return operations.start(
            service,
            OperationKind.LOAD,
            user,
            params={"dump": os.path.basename(path), "format": fmt, "size": size},
            message=f"loading the dump{shown} ({size:,} bytes, {fmt})",
        )
    except BaseException:
        remove_dump(path)
        raise


def run_load(operation) -> str:
    path = os.path.join(dumps_dir(), os.path.basename(operation.params["dump"]))
    try:
        if not os.path.exists(path):
            raise DumpRefused("the dump is gone (already loaded by an earlier run of this operation?)")
        counters = load(Server.of(operation.service), path, operation.params["format"], operation.set_counters)
    finally:
        remove_dump(path)
    unit = counters.get("unit") or ""
    loaded = f"{counters['items']:,} {unit}" if unit else f"{counters['bytes_read']:,} bytes"
    return f"dump loaded into {operation.service.name}: {loaded}"
