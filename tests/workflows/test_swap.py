import pytest

from services.choices import Outcome
from services.errors import OperationFailed
from services.models import Event, Service
from workflows.swap import SwapRefused, swap

from .conftest import env_version, routes, version


def test_it_swaps_production_and_development_both_ways(service, proxy, fleet):
    answer = swap(service, "development", service.owner)

    assert answer == {"production": version(service, "v2").pk, "development": version(service, "v1").pk}
    assert (env_version(service, "production"), env_version(service, "development")) == ("v2", "v1")
    assert routes(fleet, proxy) == {"production": "v2", "development": "v1"}
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] == str(version(service, "v2").pk)
    swapped = Event.objects.filter(service=service, action="swap", outcome=Outcome.SUCCEEDED)
    assert swapped.filter(message__startswith="swapped: production now serves v2").exists()

    swap(service, "development", service.owner)  # swapping again is the rollback

    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_refuses_an_unhealthy_version_and_changes_nothing(service, proxy, fleet):
    fleet.make_unhealthy(f"{proxy.name}-v{version(service, 'v2').pk}")

    with pytest.raises(SwapRefused, match="v2 in development is not healthy"):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Event.objects.filter(service=service, action="swap", message__startswith="swap refused").exists()
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_refuses_a_swap_with_an_environment_without_a_version(service, fleet):
    service.environments.filter(name="development").update(version=None)
    fleet.calls.clear()

    with pytest.raises(SwapRefused, match="development has no version"):
        swap(service, "development", service.owner)

    assert env_version(service, "production") == "v1"
    assert fleet.calls_to("put_proxy") == []


def test_it_restores_the_database_and_the_routes_when_a_router_fails(service, proxy, fleet):
    fleet.refuse(proxy, status=502)  # the gated change fails for another reason than health

    with pytest.raises(OperationFailed, match=f"the router on {proxy.name} did not take the new routes"):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    last = fleet.calls_to("put_proxy")[-1][2]
    assert last["require_healthy"] is None  # pushed again, as the database says
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert Event.objects.filter(
        service=service, action="swap", outcome=Outcome.FAILED, message__startswith="swap failed"
    ).exists()
    assert Service.objects.get(pk=service.pk).locked_by is None


def test_it_records_when_the_routes_cannot_be_restored(service, proxy, fleet):
    fleet.unreachable.add(proxy.name)

    with pytest.raises(OperationFailed):
        swap(service, "development", service.owner)

    assert (env_version(service, "production"), env_version(service, "development")) == ("v1", "v2")
    assert Event.objects.filter(
        service=service, action="swap", message__startswith="could not restore the routes after a failed swap"
    ).exists()
