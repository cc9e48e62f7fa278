import pytest

from routing.table import RouterRefused, RoutesNotRestored, flip_or_restore
from services.errors import OperationFailed
from versions.instances import Release
from versions.models import Environment


def environments(service) -> tuple[Environment, Environment]:
    rows = Environment.objects.filter(service=service).select_related("version")
    return rows.get(name="production"), rows.get(name="development")


def routed(fleet, service) -> dict[str, int]:
    """The version id each environment is routed to on the service's one router."""
    return {env: int(key.split("-")[0]) for env, key in fleet.routing["shop-1"]["routes"].items()}


def swapped(production: Environment, development: Environment) -> dict:
    return {
        production: {"version": development.version, "settings_key": development.settings_key},
        development: {"version": production.version, "settings_key": production.settings_key},
    }


def test_it_writes_the_rows_and_flips_every_router_health_gated(shop, fleet):
    production, development = environments(shop)
    v1, v2 = production.version, development.version

    flip_or_restore(shop, swapped(production, development), Release.of(development))

    production, development = environments(shop)
    assert (production.version, development.version) == (v2, v1)
    assert routed(fleet, shop) == {"production": v2.pk, "development": v1.pk}
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] == str(v2.pk)


def test_it_puts_the_rows_and_the_routes_back_and_raises_the_refusal(shop, fleet):
    production, development = environments(shop)
    v1, v2 = production.version, development.version
    fleet.refuse(shop.proxy_nodes().get())

    with pytest.raises(RouterRefused):
        flip_or_restore(shop, swapped(production, development), Release.of(development))

    production, development = environments(shop)
    assert (production.version, development.version) == (v1, v2)
    assert fleet.calls_to("put_proxy")[-1][2]["require_healthy"] is None  # pushed again, as the rows say
    assert routed(fleet, shop) == {"production": v1.pk, "development": v2.pk}


def test_it_says_when_the_routes_could_not_be_put_back(shop, fleet):
    production, development = environments(shop)
    v1, v2 = production.version, development.version
    fleet.unreachable.add("shop-1")

    with pytest.raises(RoutesNotRestored) as raised:
        flip_or_restore(shop, swapped(production, development), Release.of(development))

    assert isinstance(raised.value.flip_error, OperationFailed)
    assert "did not take the new routes" in str(raised.value.flip_error)
    production, development = environments(shop)
    assert (production.version, development.version) == (v1, v2)  # the rows are back all the same
