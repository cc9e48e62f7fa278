import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.module_loading import import_string

from routing.health import refresh_due, refresh_health, wait_healthy
from services.choices import ServiceState
from services.models import Node, Operation, Service
from tests.factories import ServiceFactory
from versions.instances import Release
from versions.models import Environment
from workflows import tasks
from workflows.swap import swap
from workflows.tasks import refresh_running_health, then_refresh_health

from .conftest import router_reads

pytestmark = pytest.mark.django_db


def saved(service) -> dict:
    return {env.name: env.stored_problems for env in Environment.objects.filter(service=service)}


def test_it_asks_each_router_once_and_saves_its_answer_and_the_verdicts(shop, fleet):
    fleet.make_unhealthy(f"shop-1-v{shop.environments.get(name='development').version_id}")
    verdicts = refresh_health(shop)

    assert router_reads(fleet) == ["shop-1"]
    assert verdicts["production"] == []
    assert verdicts["development"] and "is DOWN" in verdicts["development"][0]
    assert saved(shop) == verdicts
    node = Node.objects.get(name="shop-1")
    assert node.router_checked is not None and node.router_error == ""
    assert set(node.router_status["backends"]) == {str(v) for v in shop.versions.values_list("pk", flat=True)}


def test_it_saves_a_router_that_does_not_answer_as_unhealthy_with_the_reason(shop, fleet):
    fleet.unreachable.add("shop-1")
    refresh_health(shop)
    problems = saved(shop)
    assert problems["production"] == [
        "the router on shop-1 did not answer: node shop-1 did not answer: connection refused"
    ]
    node = Node.objects.get(name="shop-1")
    assert "did not answer" in node.router_error and node.router_checked is not None


def test_it_has_no_verdict_for_a_version_that_was_not_checked(shop):
    refresh_health(shop)
    production = shop.environments.get(name="production")
    other_version = shop.environments.get(name="development").version
    Environment.objects.filter(pk=production.pk).update(version=other_version)  # as a deploy's flip would
    assert saved(shop)["production"] is None, "a verdict about the previous version is no verdict"


def test_it_saves_the_health_a_deploy_polls(shop, fleet):
    wait_healthy(shop, Release.of(shop.environments.get(name="development")), timeout=1)
    assert router_reads(fleet) == ["shop-1"]
    assert saved(shop) == {"production": [], "development": []}


def test_a_swap_moves_each_verdict_with_its_version(shop, fleet):
    development = shop.environments.get(name="development")
    fleet.make_unhealthy(f"shop-1-v{shop.environments.get(name='production').version_id}")
    refresh_health(shop)
    before = saved(shop)
    fleet.unhealthy.clear()  # the incoming version is healthy: the swap's live check passes
    swap(shop, "development")
    after = saved(shop)
    assert after == {"production": before["development"], "development": before["production"]}
    assert Environment.objects.get(pk=development.pk).version_id != development.version_id


def test_an_operation_refreshes_its_service_before_it_ends_even_when_it_fails(shop):
    operation = Operation.objects.create(service=shop, kind="scale")

    def fails(op):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        then_refresh_health(fails)(operation)
    assert saved(shop) == {"production": [], "development": []}


def test_the_timer_refreshes_running_services_once_per_interval(shop, fleet, settings):
    settings.CONPAAS_HEALTH_REFRESH = 20
    ServiceFactory(name="idle")  # no nodes: nothing to ask
    Service.objects.filter(pk=ServiceFactory(name="going").pk).update(state=ServiceState.DELETING)

    assert refresh_running_health() == 1
    assert router_reads(fleet) == ["shop-1"]
    assert saved(shop) == {"production": [], "development": []}
    # A second pass (another timer, a late run) within the interval asks nobody.
    assert refresh_running_health() == 0
    assert router_reads(fleet) == ["shop-1"]
    # Once the interval has passed, it asks again.
    assert refresh_due(max_age=0) == 1
    assert router_reads(fleet) == ["shop-1", "shop-1"]


def test_the_timer_is_one_query_when_nothing_runs(db, fleet):
    ServiceFactory(name="idle")
    with CaptureQueriesContext(connection) as queries:
        assert refresh_due(max_age=20) == 0
    assert len(queries) == 1
    assert fleet.calls == []


def test_the_timer_queues_the_refresh_task_by_its_name(monkeypatch):
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda func, **options: queued.append((func, options)))

    tasks.queue_health_refresh()

    assert queued == [("workflows.tasks.refresh_running_health", {"task_name": "refresh-health", "save": False})]
    assert import_string(queued[0][0]) is tasks.refresh_running_health


def test_a_failed_refresh_does_not_hide_how_the_operation_ended(shop, monkeypatch):
    operation = Operation.objects.create(service=shop, kind="deploy")

    def broken(service):
        raise RuntimeError("database gone")

    monkeypatch.setattr("workflows.tasks.refresh_health", broken)
    assert then_refresh_health(lambda op: "deployed")(operation) == "deployed"
