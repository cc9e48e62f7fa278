import pytest

from services.models import Operation, Service
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


def test_it_creates_a_service_through_the_domain_function(client, alice):
    assert client.get("/services/new/").status_code == 200
    response = client.post("/services/new/", {"name": "blog", "runtime": "python"})
    service = Service.objects.get(owner=alice, name="blog")
    assert response.status_code == 302 and response["Location"] == f"/services/{service.pk}/"
    assert set(service.environments.values_list("name", flat=True)) == {"production", "development"}
    assert Operation.objects.get(service=service).kind == "create"

    page = client.get(response["Location"]).content.decode()
    assert "is being created" in page
    assert "starting…" in page
    assert "every 2s" in page, "the history polls while the create operation is pending"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"name": "Bad Name", "runtime": "python"}, "lowercase letters"),
        ({"name": "blog", "runtime": "cobol"}, "Select a valid choice"),
        ({"name": "", "runtime": "python"}, "required"),
    ],
)
def test_it_shows_the_api_rules_in_place(client, payload, message):
    response = client.post("/services/new/", payload)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Service.objects.exists()


def test_it_refuses_a_name_i_already_use(client, alice):
    ServiceFactory(owner=alice, name="blog")
    response = client.post("/services/new/", {"name": "blog", "runtime": "python"})
    assert response.status_code == 400
    assert "you already have a service named blog" in response.content.decode()
