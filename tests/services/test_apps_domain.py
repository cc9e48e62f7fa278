"""CONPAAS_APPS_DOMAIN: each service's URL gets a host name of its own, <service>-<owner>.<domain>,
on its router's port; everywhere a URL is shown (API, console, hence the CLI) it is that one."""

import re

import pytest

from services.models import host_label
from tests.api.conftest import client_for
from tests.factories import NodeFactory, ServiceFactory, UserFactory
from tests.test_databases import load_settings

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def test_it_joins_service_and_a_plain_owner_as_they_are():
    assert host_label("shop", "alice") == "shop-alice"
    assert host_label("my-shop", "bob42") == "my-shop-bob42"


@pytest.mark.parametrize(
    "username",
    ["Alice", "bob.smith", "bob-smith", "bob_smith", "carol@example.org", "Zoë", "Σωκράτης", "+", "a" * 150],
)
def test_it_makes_any_username_a_dns_label(username):
    label = host_label("shop", username)
    assert DNS_LABEL.fullmatch(label), label
    assert label.startswith("shop-")
    assert "-" not in label.removeprefix("shop-"), "the owner part never holds a dash: the last dash splits"
    assert re.fullmatch(r"shop-[a-z0-9]*x[0-9a-f]{10}", label), "changed usernames carry a digest"


def test_it_keeps_the_readable_letters_of_a_changed_username():
    assert re.fullmatch(r"shop-bobsmithx[0-9a-f]{10}", host_label("shop", "Bob.Smith"))


def test_it_stays_within_63_characters():
    longest_service = "s" + "x" * 38 + "p"  # 40, the longest service name
    for username in ("a" * 22, "a" * 23, "B" * 150, "x" * 150):
        label = host_label(longest_service, username)
        assert len(label) <= 63 and DNS_LABEL.fullmatch(label), label
    assert host_label(longest_service, "a" * 22) == f"{longest_service}-{'a' * 22}", "exactly 63: kept as it is"
    assert host_label(longest_service, "a" * 23) != f"{longest_service}-{'a' * 23}"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a-b", "c"), ("a", "b-c")),  # a dash could move between service and owner
        (("shop", "alice"), ("shop", "Alice")),  # Django usernames are case-sensitive
        (("shop", "bob.smith"), ("shop", "bob_smith")),  # both lose their punctuation
        (("shop", "bobsmith"), ("shop", "bob.smith")),
        # A username shaped like the digested owner part of another is digested itself.
        (("shop", "bob.smith"), ("shop", host_label("shop", "bob.smith")[len("shop-") :])),
    ],
)
def test_it_never_gives_two_services_one_host_name(one, other):
    assert host_label(*one) != host_label(*other)


def test_it_reads_the_domain_from_the_environment(monkeypatch, tmp_path):
    assert load_settings(monkeypatch, tmp_path)["CONPAAS_APPS_DOMAIN"] == ""
    loaded = load_settings(monkeypatch, tmp_path, CONPAAS_APPS_DOMAIN=" Apps.Example.ORG. ")
    assert loaded["CONPAAS_APPS_DOMAIN"] == "apps.example.org"


@pytest.mark.parametrize("value", ["apps.example.org/x", "http://apps.example.org", "-apps.org", "a..b", "a b"])
def test_it_refuses_a_domain_that_is_not_one(monkeypatch, tmp_path, value):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="CONPAAS_APPS_DOMAIN is not a DNS domain name"):
        load_settings(monkeypatch, tmp_path, CONPAAS_APPS_DOMAIN=value)


@pytest.fixture
def served(db):
    """Alice's service `shop`, its router on 10.1.0.7:40123."""
    alice = UserFactory(username="alice")
    service = ServiceFactory(owner=alice, name="shop")
    NodeFactory(service=service, is_proxy=True, address="10.1.0.7", http_port=40123)
    return alice, service


def urls_shown(user, service) -> dict[str, str]:
    """Every URL of `service` the API and the console show to `user`."""
    api = client_for(user)
    listed = api.get("/api/v1/services/").json()[0]
    shown = api.get(f"/api/v1/services/{service.pk}/").json()
    environments = {e["name"]: e for e in api.get(f"/api/v1/services/{service.pk}/environments/").json()}
    key = environments["development"]["preview_key"]
    from django.test import Client

    console = Client()
    console.force_login(user)
    return {
        "list": listed["url"],
        "list-preview": listed["environments"][1]["preview_url"].removesuffix(f"?conpaas-env={key}"),
        "show": shown["url"],
        "show-preview": shown["environments"][1]["preview_url"].removesuffix(f"?conpaas-env={key}"),
        "environments": environments["production"]["preview_url"],
        "environments-preview": environments["development"]["preview_url"].removesuffix(f"?conpaas-env={key}"),
        "dashboard": console.get("/").context["cards"][0]["url"],
        "service-page": console.get(f"/services/{service.pk}/").context["url"],
        "console-html": re.search(r'href="(http://[^"?]*)"', console.get("/").content.decode()).group(1),
    }


def test_it_shows_the_routers_address_without_a_domain(served, settings):
    settings.CONPAAS_APPS_DOMAIN = ""
    alice, service = served
    assert set(urls_shown(alice, service).values()) == {"http://10.1.0.7:40123/"}


def test_it_shows_the_services_own_host_name_everywhere(served, settings):
    settings.CONPAAS_APPS_DOMAIN = "apps.example.org"
    alice, service = served
    assert set(urls_shown(alice, service).values()) == {"http://shop-alice.apps.example.org:40123/"}
    # Staff see another user's service under its owner's name, not their own.
    staff = UserFactory(username="root", is_staff=True)
    assert set(urls_shown(staff, service).values()) == {"http://shop-alice.apps.example.org:40123/"}


def test_it_shows_where_a_router_is_published_when_it_is(served, settings):
    """CONPAAS_LOCAL_PUBLISH: users reach the router at the published address and port."""
    alice, service = served
    service.nodes.filter(is_proxy=True).update(public_address="paas.example.org", public_port=41999)
    settings.CONPAAS_APPS_DOMAIN = ""
    assert set(urls_shown(alice, service).values()) == {"http://paas.example.org:41999/"}
    settings.CONPAAS_APPS_DOMAIN = "apps.example.org"
    assert set(urls_shown(alice, service).values()) == {"http://shop-alice.apps.example.org:41999/"}
