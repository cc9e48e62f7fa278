"""The settings page of an environment (the overview lists them; tests/console/test_environments.py)."""

import pytest

from services import operations
from services.models import Operation
from tests.factories import CodeVersionFactory, ServiceFactory

pytestmark = pytest.mark.django_db

STORED = {"GREETING": {"value": "hello", "sticky": False}, "PAYMENT_API": {"value": "https://sandbox", "sticky": True}}


def settings_of(service, name="development") -> dict:
    return service.environments.get(name=name).settings


def url(service, name="development") -> str:
    return f"/services/{service.pk}/environments/{name}/settings/"


def test_it_shows_the_settings_in_their_two_lists(client, service):
    service.environments.filter(name="development").update(settings=STORED)
    page = client.get(url(service)).content.decode()
    assert ">\nGREETING=hello</textarea>" in page
    assert ">\nPAYMENT_API=https://sandbox</textarea>" in page
    assert "Change the settings of development…" in client.get(f"/services/{service.pk}/").content.decode()


def test_it_deploys_new_settings_and_sends_the_owner_to_the_operation(client, service):
    version = CodeVersionFactory(service=service, label="v2")
    service.environments.filter(name="development").update(version=version)
    response = client.post(url(service), {"travelling": "GREETING=hi", "sticky": "PAYMENT_API=https://sandbox"})
    assert response.status_code == 302
    assert response["Location"] == f"/services/{service.pk}/#activity"
    operation = Operation.objects.get(service=service, kind="deploy")
    assert operation.params["settings"] == {
        "GREETING": {"value": "hi", "sticky": False},
        "PAYMENT_API": {"value": "https://sandbox", "sticky": True},
    }
    assert settings_of(service) == {}, "the settings change with the route, when the deploy succeeds"


def test_empty_lists_remove_every_setting(client, service):
    service.environments.filter(name="development").update(settings=STORED)
    assert client.post(url(service), {"travelling": "", "sticky": ""}).status_code == 302
    assert settings_of(service) == {}


def test_unchanged_settings_deploy_nothing(client, service):
    version = CodeVersionFactory(service=service, label="v2")
    service.environments.filter(name="development").update(version=version, settings=STORED)
    response = client.post(url(service), {"travelling": "GREETING=hello", "sticky": "PAYMENT_API=https://sandbox"})
    assert response.status_code == 302
    assert "are unchanged" in client.get(response["Location"]).content.decode()
    assert not Operation.objects.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"travelling": "GREETING=hi\n1BAD=x"}, "1BAD: a setting&#x27;s name is letters, digits and underscores"),
        ({"sticky": "CONPAAS_ENV=x"}, "CONPAAS_ENV: names starting with CONPAAS_ are the platform&#x27;s"),
        ({"travelling": "GREETING=hi\njust words"}, "travelling settings, line 2: NAME=value expected"),
    ],
)
def test_a_refusal_names_the_setting_keeps_the_text_and_changes_nothing(client, service, payload, message):
    version = CodeVersionFactory(service=service, label="v2")
    service.environments.filter(name="development").update(version=version, settings=STORED)
    response = client.post(url(service), payload)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    for text in payload.values():
        assert f"{text}</textarea>" in page, "the text is kept for correcting"
    assert settings_of(service) == STORED
    assert not Operation.objects.exists()


def test_it_shows_a_busy_service_instead_of_changing_the_settings(client, service):
    with operations.holding(service, "deploy", None):
        refused = client.post(url(service), {"travelling": "GREETING=hi"})
    assert refused.status_code == 409
    assert "the service is busy" in refused.content.decode()
    assert settings_of(service) == {}


def test_a_value_over_several_lines_is_not_offered_for_editing(client, service):
    """The form has a line a setting: such a value would come back cut in two."""
    service.environments.filter(name="development").update(settings={"PEM": {"value": "a\nB=b", "sticky": False}})
    page = client.get(url(service)).content.decode()
    assert "PEM has a value over several lines" in page
    assert "<textarea" not in page
    assert client.post(url(service), {"travelling": "PEM=a\nB=b"}).status_code == 400
    assert settings_of(service) == {"PEM": {"value": "a\nB=b", "sticky": False}}


def test_an_unknown_environment_is_404(client, service):
    assert client.get(url(service, "staging")).status_code == 404
    assert client.post(url(service, "staging"), {"travelling": "A=1"}).status_code == 404


def test_staff_see_other_users_setting_names_but_not_their_values(client, alice, bob):
    bobs = ServiceFactory(owner=bob, name="bobs-shop")
    bobs.environments.filter(name="production").update(settings=STORED)
    alice.is_staff = True
    alice.save()
    page = client.get(f"/services/{bobs.pk}/").content.decode()
    assert '<code>GREETING</code> <span class="badge">travelling</span>' in page
    assert "hello" not in page and "https://sandbox" not in page
    assert "/settings/" not in page
    assert client.get(url(bobs, "production")).status_code == 403
    assert client.post(url(bobs, "production"), {"travelling": ""}).status_code == 403
    assert settings_of(bobs, "production") == STORED
