import pytest

from routing.health import refresh_health
from services.models import Node
from tests.factories import CodeVersionFactory, UserFactory
from versions.models import Instance, InstanceState

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(service):
    """v1 in production, v2 in development, each running on the one backend node (no proxy: no agent call)."""
    node = Node.objects.create(service=service, name="shop-1", cloud="local", is_backend=True, state="running")
    v1, v2 = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    for version in (v1, v2):
        Instance.objects.create(node=node, version=version, port=1, state=InstanceState.RUNNING)
    service.environments.filter(name="production").update(version=v1)
    service.environments.filter(name="development").update(version=v2)
    return v1, v2


def versions(service) -> dict:
    return dict(service.environments.values_list("name", "version__label"))


def test_it_shows_what_a_swap_will_change(client, service, two_versions):
    page = client.get(f"/services/{service.pk}/swap/?environment=development").content.decode()
    assert '<th scope="row">production</th><td>v1</td><td><strong>v2</strong></td>' in page
    assert '<th scope="row">development</th><td>v2</td><td><strong>v1</strong></td>' in page
    assert "disabled" not in page


def test_it_swaps_then_offers_to_swap_back(client, service, two_versions):
    response = client.post(f"/services/{service.pk}/swap/", {"environment": "development"})
    assert response.status_code == 302
    assert response["Location"] == f"/services/{service.pk}/swap/done/?environment=development"
    assert versions(service) == {"production": "v2", "development": "v1"}

    done = client.get(response["Location"]).content.decode()
    assert 'data-testid="swap-production">v2<' in done
    assert ">Swap back</button>" in done

    client.post(f"/services/{service.pk}/swap/", {"environment": "development"})
    assert versions(service) == {"production": "v1", "development": "v2"}


def test_it_disables_the_swap_with_the_reason_while_the_incoming_version_is_unhealthy(client, service, two_versions):
    v1, v2 = two_versions
    Instance.objects.filter(version=v2).update(state=InstanceState.FAILED)
    refresh_health(service)  # what the workers do; the page shows what they saved
    page = client.get(f"/services/{service.pk}/swap/?environment=development").content.decode()
    assert "Swap not possible now: v2 in development is not healthy" in page
    assert 'disabled aria-describedby="swap-blocked"' in page

    refused = client.post(f"/services/{service.pk}/swap/", {"environment": "development"})
    assert refused.status_code == 409
    assert "The swap was refused: v2 in development is not healthy" in refused.content.decode()
    assert versions(service) == {"production": "v1", "development": "v2"}


def test_it_shows_a_busy_service_instead_of_swapping(client, service, two_versions):
    from services import operations

    with operations.holding(service, "deploy", None):
        refused = client.post(f"/services/{service.pk}/swap/", {"environment": "development"})
    assert refused.status_code == 409
    assert "the service is busy" in refused.content.decode()


def test_it_does_not_swap_production_with_itself(client, service):
    assert client.get(f"/services/{service.pk}/swap/?environment=production").status_code == 404


def test_it_shows_the_settings_a_swap_will_change_and_that_it_starts_instances(client, service, two_versions):
    service.environments.filter(name="production").update(
        settings={"API": {"value": "live", "sticky": True}, "GREETING": {"value": "hello", "sticky": False}}
    )
    service.environments.filter(name="development").update(
        settings={"API": {"value": "sandbox", "sticky": True}, "GREETING": {"value": "hi", "sticky": False}}
    )
    page = client.get(f"/services/{service.pk}/swap/?environment=development").content.decode()
    assert (
        '<tr><th scope="row">production</th><td><code>GREETING</code></td><td><code>hello</code></td>'
        "<td><strong><code>hi</code></strong></td><td>travelling</td></tr>"
    ) in page
    assert "<code>API</code>" not in page, "a sticky setting stays: its value does not change"
    assert 'id="swap-starts"' in page


def test_staff_see_which_settings_a_swap_changes_but_not_their_values(client, alice, service, two_versions):
    service.environments.filter(name="production").update(settings={"TOKEN": {"value": "s3cret", "sticky": False}})
    service.owner = UserFactory(username="carol")
    service.save()
    alice.is_staff = True
    alice.save()
    page = client.get(f"/services/{service.pk}/swap/?environment=development").content.decode()
    assert '<tr><th scope="row">production</th><td><code>TOKEN</code></td><td>travelling</td></tr>' in page
    assert "s3cret" not in page


def test_a_swap_without_setting_changes_says_so(client, service, two_versions):
    page = client.get(f"/services/{service.pk}/swap/?environment=development").content.decode()
    assert "No setting changes value" in page
    assert 'id="swap-starts"' not in page
