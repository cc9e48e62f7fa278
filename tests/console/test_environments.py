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
