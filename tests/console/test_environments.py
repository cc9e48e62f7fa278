import pytest

from services.models import Operation
from tests.factories import CodeVersionFactory, ServiceFactory

pytestmark = pytest.mark.django_db


def test_it_shows_each_environment_with_its_version_and_preview_link(client, service):
    version = CodeVersionFactory(service=service, label="v3")
    service.environments.filter(name="development").update(version=version)
    page = client.get(f"/services/{service.pk}/").content.decode()
    assert 'data-testid="version-development">v3<' in page
    assert 'data-testid="version-production">none yet<' in page
    assert "Preview link: starting…" in page, "no proxy runs yet, so there is no link"
    assert '<label for="deploy-production">Deploy a version to production</label>' in page


def test_it_adds_an_environment(client, service):
    response = client.post(f"/services/{service.pk}/environments/", {"name": "staging", "preview_key": "stage-key"})
    assert response.status_code == 302
    staging = service.environments.get(name="staging")
    assert staging.preview_key == "stage-key"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "development"}, "already has an environment named development"),
        ({"name": "Not Valid"}, "lowercase letters"),
        ({"name": "qa", "preview_key": "x"}, "A preview key is 4 to 128"),
    ],
)
def test_it_shows_why_an_environment_is_refused(client, service, payload, message):
    response = client.post(f"/services/{service.pk}/environments/", payload)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert service.environments.count() == 2


def test_it_requests_a_deploy(client, service):
    version = CodeVersionFactory(service=service, label="v1")
    response = client.post(f"/services/{service.pk}/environments/production/deploy/", {"version": version.pk})
    assert response.status_code == 302
    operation = Operation.objects.get(service=service, kind="deploy")
    assert operation.params == {"environment": "production", "version": version.pk}


def test_it_refuses_to_deploy_another_services_version(client, service, alice):
    foreign = CodeVersionFactory(service=ServiceFactory(owner=alice), label="v1")
    response = client.post(f"/services/{service.pk}/environments/production/deploy/", {"version": foreign.pk})
    assert response.status_code == 302
    assert not Operation.objects.filter(kind="deploy").exists()


def test_it_adds_an_environment_with_its_own_database_copy(client, service):
    response = client.post(f"/services/{service.pk}/environments/", {"name": "qa", "database_copy": "on"})
    assert response.status_code == 302
    assert service.environments.get(name="qa").database_copy
    page = client.get(f"/services/{service.pk}/").content.decode()
    assert 'data-testid="database-copy-qa">Database: its own copy of the linked databases<' in page


def test_it_deploys_new_settings_of_a_serving_environment(client, service):
    version = CodeVersionFactory(service=service, label="v1")
    service.environments.filter(name="production").update(version=version)
    response = client.post(
        f"/services/{service.pk}/environments/production/settings/",
        {"travelling": "GREETING=hello\n\n# a comment\n", "sticky": "API=https://x/?a=b"},
    )
    assert response.status_code == 302 and response["Location"].endswith("#activity")
    operation = Operation.objects.get(service=service, kind="deploy")
    assert operation.params["settings"] == {
        "API": {"value": "https://x/?a=b", "sticky": True},
        "GREETING": {"value": "hello", "sticky": False},
    }


def test_it_keeps_the_settings_of_an_empty_environment_for_its_first_deploy_and_shows_them(client, service):
    response = client.post(f"/services/{service.pk}/environments/development/settings/", {"sticky": "API=sandbox"})
    assert response.status_code == 302
    assert service.environments.get(name="development").settings == {"API": {"value": "sandbox", "sticky": True}}
    page = client.get(f"/services/{service.pk}/").content.decode()
    assert '<code>API=sandbox</code> <span class="badge">sticky</span>' in page
    assert "Saved the settings of development; they apply at its first deploy." in page


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"travelling": "9X=1"}, "9X: a setting&#x27;s name is letters"),
        ({"travelling": "PATH=/tmp"}, "PATH: PATH is set by the platform itself"),
        ({"travelling": "JUSTANAME"}, "travelling settings, line 1: NAME=value expected"),
        ({"travelling": "A=1", "sticky": "A=2"}, "A is set twice"),
    ],
)
def test_it_refuses_bad_settings_naming_them_and_changes_nothing(client, service, payload, message):
    response = client.post(f"/services/{service.pk}/environments/development/settings/", payload, follow=True)
    assert message in response.content.decode()
    assert service.environments.get(name="development").settings == {}
    assert not Operation.objects.exists()


def test_it_deletes_an_environment_but_not_production_nor_another_users(client, service, bob):
    from django.test import Client

    other = Client()
    other.force_login(bob)
    assert other.post(f"/services/{service.pk}/environments/development/delete/").status_code == 404
    assert service.environments.filter(name="development").exists()

    refused = client.post(f"/services/{service.pk}/environments/production/delete/", follow=True)
    assert "Not deleted: production cannot be deleted" in refused.content.decode()
    assert client.post(f"/services/{service.pk}/environments/development/delete/").status_code == 302
    assert not service.environments.filter(name="development").exists()


def test_it_shows_a_busy_service_instead_of_deleting_an_environment(client, service):
    from services import operations

    with operations.holding(service, "deploy", None):
        refused = client.post(f"/services/{service.pk}/environments/development/delete/", follow=True)
    assert "Not deleted: the service is busy" in refused.content.decode()
    assert service.environments.filter(name="development").exists()


def test_deleting_an_unknown_environment_is_404_and_a_get_deletes_nothing(client, service):
    assert client.post(f"/services/{service.pk}/environments/staging/delete/").status_code == 404
    assert client.get(f"/services/{service.pk}/environments/development/delete/").status_code == 405
    assert service.environments.filter(name="development").exists()


def test_every_help_text_a_field_points_to_is_on_the_page(client, service):
    import re

    page = client.get(f"/services/{service.pk}/").content.decode()
    described = {name for names in re.findall(r'aria-describedby="([^"]+)"', page) for name in names.split()}
    assert described, "the service page has fields with help texts"
    assert {name for name in described if f'id="{name}"' not in page} == set()
