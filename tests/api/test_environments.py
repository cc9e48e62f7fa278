import pytest

from services.models import Operation
from tests.factories import CodeVersionFactory, ServiceFactory
from versions.models import Environment

pytestmark = pytest.mark.django_db


def test_it_lists_environments_with_preview_keys(api, service):
    body = {e["name"]: e for e in api.get(f"/api/v1/services/{service.pk}/environments/").json()}
    assert set(body) == {"production", "development"}
    assert body["production"]["preview_key"] is None
    assert body["development"]["preview_key"]
    assert body["development"]["state"] == "empty"
    assert set(body["development"]) >= {"name", "version", "preview_key", "preview_url", "state"}


def test_it_starts_a_deploy_operation(api, service):
    version = CodeVersionFactory(service=service)
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/development/", {"version": version.pk}, format="json"
    )
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["id"])
    assert operation.kind == "deploy" and operation.params == {"environment": "development", "version": version.pk}
    state = api.get(f"/api/v1/services/{service.pk}/environments/development/").json()["state"]
    assert state == "deploying"
    assert Environment.objects.get(service=service, name="development").version is None, (
        "nothing changes before the deploy runs"
    )


def test_it_refuses_to_deploy_another_services_version(api, service):
    foreign = CodeVersionFactory(service=ServiceFactory(owner=service.owner, name="other"))
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/production/", {"version": foreign.pk}, format="json"
    )
    assert response.status_code == 400
    assert "has no version with id" in response.json()["version"][0]
    assert not Operation.objects.exists()


def test_an_unknown_environment_is_not_found(api, service):
    version = CodeVersionFactory(service=service)
    response = api.patch(f"/api/v1/services/{service.pk}/environments/nope/", {"version": version.pk}, format="json")
    assert response.status_code == 404
    assert "no environment named nope" in response.json()["detail"]
    assert not Operation.objects.exists()


def test_swapping_an_unknown_environment_is_not_found(api, service):
    response = api.post(f"/api/v1/services/{service.pk}/swap/", {"environment": "nope"}, format="json")
    assert response.status_code == 404


def test_it_refuses_to_swap_an_empty_environment(api, service):
    response = api.post(f"/api/v1/services/{service.pk}/swap/", {}, format="json")
    assert response.status_code == 409
    assert "development has no version to swap in" in response.json()["detail"]


def test_it_refuses_to_swap_while_another_operation_holds_the_service(api, service):
    holder = Operation.objects.create(service=service, service_name="shop", kind="deploy", state="running")
    service.locked_by = holder
    service.save()
    response = api.post(f"/api/v1/services/{service.pk}/swap/", {}, format="json")
    assert response.status_code == 409
    assert f"busy with deploy operation #{holder.pk}" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload", [{"name": "Bad Name"}, {"name": "production"}, {"name": "ok-name", "preview_key": "a b"}]
)
def test_it_refuses_a_bad_environment(api, service, payload):
    response = api.post(f"/api/v1/services/{service.pk}/environments/", payload, format="json")
    assert response.status_code == 400
    assert service.environments.count() == 2


def test_it_refuses_a_preview_key_for_production(api, service):
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/production/", {"preview_key": "readable-key"}, format="json"
    )
    assert response.status_code == 400
    assert Environment.objects.get(service=service, name="production").preview_key is None


def test_a_swap_whose_router_does_not_answer_is_a_clear_503_with_history(api, service):
    import socket

    from services.models import Event, Node
    from versions.models import Instance

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    node = Node.objects.create(
        service=service,
        name="shop-n1",
        cloud="local",
        is_proxy=True,
        is_backend=True,
        state="running",
        address="127.0.0.1",
        agent_port=closed_port,
        http_port=1,
    )
    v1, v2 = CodeVersionFactory(service=service), CodeVersionFactory(service=service)
    for version in (v1, v2):
        Instance.objects.create(node=node, version=version, port=2, state="running")
    service.environments.filter(name="production").update(version=v1)
    service.environments.filter(name="development").update(version=v2)

    response = api.post(f"/api/v1/services/{service.pk}/swap/", {}, format="json")
    assert response.status_code == 503
    assert "did not take the new routes" in response.json()["detail"]
    assert Environment.objects.get(service=service, name="production").version == v1, "nothing changed"
    assert Event.objects.filter(service=service, action="swap", outcome="failed").exists()
    service.refresh_from_db()
    assert service.locked_by is None


@pytest.mark.parametrize("key", ["production", "Production"])
def test_production_is_not_a_preview_key(api, service, key):
    added = api.post(
        f"/api/v1/services/{service.pk}/environments/", {"name": "staging", "preview_key": key}, format="json"
    )
    assert added.status_code == 400
    assert "reserved" in added.json()["preview_key"][0]
    changed = api.patch(f"/api/v1/services/{service.pk}/environments/development/", {"preview_key": key}, format="json")
    assert changed.status_code == 400
    assert not Environment.objects.filter(preview_key__iexact="production").exists()
