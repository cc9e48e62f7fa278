"""Creating and deleting a service, and adding environments, against the fake agent and cloud."""

import pytest

from services import agent
from services.choices import NodeState, OperationState, ServiceState
from services.errors import Conflict
from services.models import Event, Link, Node, Operation, Service
from tests.factories import ServiceFactory
from versions.models import Environment
from workflows import lifecycle
from workflows.environments import add_environment, change_preview_key

from .conftest import routes


def test_it_creates_a_service_on_one_node_with_both_roles_and_a_router_that_knows_its_keys(alice, fleet, queue):
    service = None

    def create():
        nonlocal service
        service, operation = lifecycle.create(alice, "shop", "python")
        return operation

    operation = queue.start(create)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    service.refresh_from_db()
    assert service.state == ServiceState.RUNNING
    node = Node.objects.get(service=service)
    assert (node.is_proxy, node.is_backend, node.state) == (True, True, NodeState.RUNNING)
    development = Environment.objects.get(service=service, name="development")
    assert fleet.routing[node.name]["preview_keys"] == {development.preview_key: "development"}
    assert routes(fleet, node) == {}  # nothing deployed yet: the router answers 503
    assert service.url == node.http_url


def test_a_create_whose_node_never_answers_fails_the_service_after_every_attempt(
    alice, fleet, queue, cloud, monkeypatch, settings, pauses
):
    # The cloud starts each node but its agent never answers (one look each: no boot timeout).
    settings.CONPAAS_BOOT_TIMEOUT = 0
    monkeypatch.setattr(agent, "client_for", _unreachable_client(fleet))
    service = None

    def create():
        nonlocal service
        service, operation = lifecycle.create(alice, "shop", "python")
        return operation

    operation = queue.start(create)

    assert operation.state == OperationState.FAILED
    assert "did not come up within 0 s" in operation.error and "(gave up after 3 attempts)" in operation.error
    service.refresh_from_db()
    assert service.state == ServiceState.FAILED
    assert list(Node.objects.filter(service=service).values_list("state", flat=True)) == [NodeState.DESTROYED] * 3
    assert cloud.list_nodes() == [], "each failed attempt's node is destroyed"
    assert pauses == [2, 4]
    assert Event.objects.filter(service=service, action="node.boot", outcome="failed").count() == 3


def _unreachable_client(fleet):
    original = fleet.client

    def client(node, timeout=30.0):
        fleet.unreachable.add(node.name)
        return original(node, timeout)

    return client


def test_it_deletes_a_service_its_nodes_and_its_unshared_archives(service, queue):
    archive = service.versions.first().archive_path
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"zip")
    service_id = service.pk

    operation = queue.start(lambda: lifecycle.request_delete(service, service.owner))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert not Service.objects.filter(pk=service_id).exists()
    assert not Node.objects.filter(service_id=service_id).exists()
    assert not archive.exists()
    assert Event.objects.filter(service=None, action="delete", outcome="succeeded").exists()


def linked(target: Service, *names: str) -> list[Service]:
    """Services of `target`'s owner, each linking `target`."""
    services = [ServiceFactory(owner=target.owner, name=name) for name in names]
    for service in services:
        Link.objects.create(service=service, target=target)
    return services


def test_it_refuses_to_delete_a_linked_service_naming_the_services_that_link_it(service, queue):
    service.name = "phpdb"
    service.save()
    linked(service, "site", "shop")

    with pytest.raises(Conflict) as refusal:
        lifecycle.request_delete(service, service.owner)

    assert str(refusal.value) == (
        "phpdb is linked by shop, site: delete them or unlink it from their manifest first, or force the delete"
    )
    service.refresh_from_db()
    assert service.state == ServiceState.RUNNING
    assert not Operation.objects.exists() and not queue


def test_a_forced_delete_says_which_services_keep_a_dead_link(service, queue):
    site, shop = linked(service, "site", "shop")

    operation = queue.start(lambda: lifecycle.request_delete(service, service.owner, force=True))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert not Service.objects.filter(pk=service.pk).exists()
    requested = Event.objects.get(operation=operation, action="delete", outcome="info")
    assert requested.message.endswith("(forced); left with a dead link: shop, site")
    for other in (site, shop):
        assert Event.objects.filter(service=other, action="link", message__contains="is being deleted").exists()


def test_services_deleted_with_it_or_already_being_deleted_do_not_count(service):
    site, shop = linked(service, "site", "shop")
    Service.objects.filter(pk=shop.pk).update(state=ServiceState.DELETING)

    assert service.linking_services() == [site]
    assert service.linking_services(excluding=[site]) == []
    lifecycle.request_delete(service, service.owner, along=[service, site])


def test_adding_an_environment_gives_the_routers_its_preview_key(service, proxy, fleet, alice):
    environment = add_environment(service, "staging", alice, "staging-key")

    assert fleet.routing[proxy.name]["preview_keys"]["staging-key"] == "staging"
    assert environment.preview_key == "staging-key"
    assert Event.objects.filter(service=service, action="environment", message="added environment staging").exists()
    service.refresh_from_db()
    assert service.locked_by is None


def test_changing_a_preview_key_replaces_the_old_one_on_the_routers(service, proxy, fleet, alice):
    development = Environment.objects.get(service=service, name="development")
    old_key = development.preview_key

    change_preview_key(development, "readable-key", alice)

    keys = fleet.routing[proxy.name]["preview_keys"]
    assert keys["readable-key"] == "development"
    assert old_key not in keys


def test_a_changed_health_check_reaches_every_router_at_once(alice, fleet, queue):
    made = {}

    def create():
        made["service"], operation = lifecycle.create(alice, "shop", "python", health_check_path="/healthz")
        return operation

    queue.start(create)
    service = made["service"]
    node = Node.objects.get(service=service)
    assert fleet.routing[node.name]["health_path"] == "/healthz"
    assert "health_status" not in fleet.routing[node.name], "unset: the router's own default, not sent"

    lifecycle.update(service, alice, health_check_status=200)

    assert (fleet.routing[node.name]["health_path"], fleet.routing[node.name]["health_status"]) == ("/healthz", 200)
    service.refresh_from_db()
    assert service.locked_by is None, "held only while the routers took it"
    event = Event.objects.get(service=service, action="service.update")
    assert event.message == (
        "health check set to GET /healthz answering 200 (was GET /healthz answering any status below 500)"
    )
    assert event.operation.kind == "route" and event.operation.state == OperationState.SUCCEEDED

    puts = len(fleet.calls_to("put_proxy"))
    lifecycle.update(service, alice, health_check_status=200, health_check_path="/healthz")
    assert len(fleet.calls_to("put_proxy")) == puts, "nothing changed: the routers are not asked"


def test_a_changed_heap_asks_no_router(alice, fleet, queue):
    made = {}

    def create():
        made["service"], operation = lifecycle.create(alice, "shop", "java", java_heap_mb=512)
        return operation

    queue.start(create)
    puts = len(fleet.calls_to("put_proxy"))

    lifecycle.update(made["service"], alice, java_heap_mb=768)

    assert len(fleet.calls_to("put_proxy")) == puts
    assert Service.objects.get(pk=made["service"].pk).java_heap_mb == 768
