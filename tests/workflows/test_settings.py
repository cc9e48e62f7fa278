"""Settings per environment: sticky ones stay with the environment on a swap, travelling ones follow
the code version; a swap that changes a version's values starts it with them first."""

import pytest
from django.core.exceptions import ValidationError

from services.choices import Outcome
from services.errors import Conflict
from services.models import Event
from versions.models import Environment, clean_settings, swapped_settings
from workflows.environments import change_environment, delete_environment
from workflows.swap import SwapRefused, preview_swap, swap, swap_plan

from .conftest import env_version, routes, version

STAGING = {
    "PAYMENT_API": {"value": "https://sandbox.example", "sticky": True},
    "GREETING": {"value": "hi", "sticky": False},
}
LIVE = {
    "PAYMENT_API": {"value": "https://pay.example", "sticky": True},
    "GREETING": {"value": "hello", "sticky": False},
}


def env(service, name: str) -> Environment:
    return Environment.objects.get(service=service, name=name)


def variables(fleet, environment: Environment) -> dict:
    """What the environment's instances were started with."""
    found = [i for i in fleet.instances.values() if i["name"].endswith(f"-v{environment.backend}")]
    assert found, f"no instance of {environment.backend}"
    return found[0]["env"]


def deploy(queue, service, name: str, settings: dict, **changes):
    return queue.start(lambda: change_environment(env(service, name), service.owner, settings=settings, **changes))


@pytest.fixture
def configured(service, queue):
    """v1 in production with the live settings, v2 in development with the staging ones."""
    assert deploy(queue, service, "production", LIVE).state == "succeeded"
    assert deploy(queue, service, "development", STAGING).state == "succeeded"
    return service


def test_a_settings_change_is_deployed_health_gated_and_reaches_the_instances(configured, fleet, proxy):
    production = env(configured, "production")
    assert variables(fleet, production) == {
        "CONPAAS_ENV": "production",
        "CONPAAS_SERVICE": configured.name,
        "PAYMENT_API": "https://pay.example",
        "GREETING": "hello",
    }
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    # The instances of v1 without settings were retired once production ran the new ones.
    assert not any(name.endswith(f"-v{version(configured, 'v1').pk}") for name in fleet.instances)
    route = Event.objects.filter(service=configured, action="route", message__startswith="production").first()
    assert route.message == "production now serves v1; settings changed: GREETING, PAYMENT_API"
    assert "pay.example" not in " ".join(Event.objects.filter(service=configured).values_list("message", flat=True))


def test_sticky_settings_stay_and_travelling_ones_follow_the_version_on_a_swap(configured, fleet, proxy):
    swap(configured, "development", configured.owner)

    production, development = env(configured, "production"), env(configured, "development")
    assert (env_version(configured, "production"), env_version(configured, "development")) == ("v2", "v1")
    assert variables(fleet, production)["PAYMENT_API"] == "https://pay.example"  # sticky: stayed
    assert variables(fleet, production)["GREETING"] == "hi"  # travelling: came with v2
    assert variables(fleet, development)["PAYMENT_API"] == "https://sandbox.example"
    assert variables(fleet, development)["GREETING"] == "hello"
    assert routes(fleet, proxy) == {"production": "v2", "development": "v1"}
    # v2 was started with production's values before the routers flipped to it, gated on them.
    assert fleet.calls_to("put_proxy")[-2][2]["require_healthy"] == production.backend
    # What ran before the swap is retired; exactly the two releases in use are left.
    assert {i["name"].split("-v", 1)[1] for i in fleet.instances.values()} == {production.backend, development.backend}
    message = Event.objects.filter(service=configured, action="swap", outcome=Outcome.SUCCEEDED).first().message
    assert "settings changed in production: GREETING; development: GREETING" in message
    assert "sandbox" not in message

    swap(configured, "development", configured.owner)  # and back

    assert variables(fleet, env(configured, "production"))["GREETING"] == "hello"
    assert env(configured, "production").settings == LIVE


def test_a_swap_without_sticky_differences_only_flips_the_routes(service, queue, fleet, proxy):
    same = {"GREETING": {"value": "hello", "sticky": False}}
    deploy(queue, service, "production", same)
    deploy(queue, service, "development", {"GREETING": {"value": "hi", "sticky": False}})
    starts = len(fleet.calls_to("put_instance"))

    swap(service, "development", service.owner)

    assert len(fleet.calls_to("put_instance")) == starts  # nothing started: the values travel with the version
    assert variables(fleet, env(service, "production"))["GREETING"] == "hi"


def test_a_version_unhealthy_with_production_settings_is_refused_and_nothing_changes(configured, fleet, proxy):
    plan = preview_swap(configured, "development")
    original = set(fleet.instances)
    # v2 started with production's values fails its health check (say it cannot reach the live API).
    fleet.make_unhealthy(f"{proxy.name}-v{swap_plan(configured, 'development').incoming.backend}")
    with pytest.raises(SwapRefused, match="with the settings it would get, v2 did not pass its health check"):
        swap(configured, "development", configured.owner)

    assert plan["starts_instances"] is True
    assert (env_version(configured, "production"), env_version(configured, "development")) == ("v1", "v2")
    assert env(configured, "production").settings == LIVE
    assert routes(fleet, proxy) == {"production": "v1", "development": "v2"}
    assert set(fleet.instances) == original  # what was started for the swap is gone again


def test_the_dry_run_shows_the_versions_and_settings_that_change_and_changes_nothing(configured, fleet):
    calls = len(fleet.calls)
    plan = preview_swap(configured, "development")

    assert plan["refused"] is None and plan["starts_instances"] is True
    production = plan["environments"]["production"]
    assert production["version_label"] == {"from": "v1", "to": "v2"}
    assert production["settings"] == {"GREETING": {"from": "hello", "to": "hi", "sticky": False}}
    assert plan["environments"]["development"]["settings"] == {
        "GREETING": {"from": "hi", "to": "hello", "sticky": False}
    }
    assert len([c for c in fleet.calls[calls:] if c[1] != "get_proxy"]) == 0
    assert env_version(configured, "production") == "v1"


def test_the_dry_run_says_why_a_swap_would_be_refused(service, fleet, proxy):
    fleet.make_unhealthy(f"{proxy.name}-v{version(service, 'v2').pk}")
    plan = preview_swap(service, "development")
    assert plan["refused"].startswith("v2 in development is not healthy")


def test_settings_of_an_environment_without_a_version_wait_for_its_first_deploy(service, fleet):
    from workflows.environments import add_environment

    staging = add_environment(service, "staging", service.owner)
    assert change_environment(staging, service.owner, settings=STAGING) is None
    assert env(service, "staging").settings == STAGING
    assert Event.objects.filter(service=service, message__startswith="changed settings of staging").exists()


def test_production_takes_no_database_copy(service):
    with pytest.raises(Conflict, match="production uses the linked databases themselves"):
        change_environment(env(service, "production"), service.owner, database_copy=True)


def test_deleting_an_environment_stops_what_only_it_ran(configured, fleet, proxy):
    development = env(configured, "development")
    delete_environment(development, configured.owner)

    assert not Environment.objects.filter(pk=development.pk).exists()
    assert not any(name.endswith(f"-v{development.backend}") for name in fleet.instances)
    assert set(fleet.routing[proxy.name]["routes"]) == {"production"}
    assert development.preview_key not in fleet.routing[proxy.name]["preview_keys"]
    with pytest.raises(Conflict, match="production cannot be deleted"):
        delete_environment(env(configured, "production"), configured.owner)


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"1ABC": "x"}, "settings.1ABC"),
        ({"CONPAAS_ENV": "x"}, "names starting with CONPAAS_ are the platform's"),
        ({"PATH": "/tmp"}, "set by the platform itself"),
        ({"A": {"value": "x", "sticky": "yes"}}, "sticky is true or false"),
        ({"A": {"value": "x", "secret": True}}, "unknown key 'secret'"),
        ({"A": ["x"]}, "the value is a string"),
        ({"A": "x" * 5000}, "at most 4096 characters"),
        ([], "an object of NAME: value"),
    ],
)
def test_bad_settings_are_refused_by_name(given, error):
    with pytest.raises(ValidationError, match=error) as refused:
        clean_settings(given)
    assert refused.value.message_dict


def test_settings_are_stored_whole_with_their_stickiness():
    assert clean_settings({"A": "x", "B": 3, "C": {"value": "y", "sticky": True}}) == {
        "A": {"value": "x", "sticky": False},
        "B": {"value": "3", "sticky": False},
        "C": {"value": "y", "sticky": True},
    }


def test_a_name_sticky_in_one_environment_stays_put_in_both_and_swapping_back_restores_them():
    production = {"API": {"value": "live", "sticky": True}, "A": {"value": "a", "sticky": False}}
    other = {"API": {"value": "travel", "sticky": False}, "X": {"value": "1", "sticky": False}}
    after_production, after_other = swapped_settings(production, other)
    assert after_production == {"API": {"value": "live", "sticky": True}, "X": {"value": "1", "sticky": False}}
    assert after_other == {"A": {"value": "a", "sticky": False}, "API": {"value": "travel", "sticky": False}}
    assert swapped_settings(after_production, after_other) == (production, other)


def test_a_setting_cannot_replace_what_a_link_gives(service, queue):
    from services.models import Link
    from tests.factories import ServiceFactory

    db = ServiceFactory(owner=service.owner, name="db", runtime="postgresql")
    Link.objects.create(service=service, target=db)
    with pytest.raises(ValidationError, match="DATABASE_URL: set by the link to db"):
        change_environment(env(service, "production"), service.owner, settings={"DATABASE_URL": "postgres://x"})
    assert not env(service, "production").settings
