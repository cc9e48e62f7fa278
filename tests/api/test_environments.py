import pytest

from services.models import Operation
from tests.api.conftest import client_for
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


@pytest.mark.parametrize("whose", ["another service's", "nobody's"])
def test_it_refuses_to_deploy_a_version_the_service_does_not_have(api, service, whose):
    foreign = CodeVersionFactory(service=ServiceFactory(owner=service.owner, name="other"))
    version_id = foreign.pk if whose == "another service's" else foreign.pk + 1000
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/production/", {"version": version_id}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["version"] == [f"{service.name} has no version with id '{version_id}' (it has none)"]
    assert not Operation.objects.exists()


def test_an_unknown_environment_is_not_found(api, service):
    version = CodeVersionFactory(service=service)
    response = api.patch(f"/api/v1/services/{service.pk}/environments/nope/", {"version": version.pk}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "shop has no environment named 'nope' (it has: production, development)"
    assert not Operation.objects.exists()


def test_swapping_an_unknown_environment_is_not_found(api, service):
    response = api.post(f"/api/v1/services/{service.pk}/swap/", {"environment": "developmnt"}, format="json")
    assert response.status_code == 404
    assert response.json() == {
        "detail": "shop has no environment named 'developmnt' (it has: production, development); "
        "did you mean 'development'?"
    }
    dry_run = {"environment": "developmnt", "dry_run": True}
    assert api.post(f"/api/v1/services/{service.pk}/swap/", dry_run, format="json").json() == response.json()


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


def test_it_takes_settings_and_a_database_copy_for_a_new_environment(api, service):
    response = api.post(
        f"/api/v1/services/{service.pk}/environments/",
        {"name": "staging", "settings": {"A": "1", "B": {"value": "x", "sticky": True}}, "database_copy": True},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["settings"] == {"A": {"value": "1", "sticky": False}, "B": {"value": "x", "sticky": True}}
    assert response.json()["database_copy"] is True
    staging = Environment.objects.get(service=service, name="staging")
    assert staging.database_copy and staging.settings["B"]["sticky"]


def test_settings_of_a_serving_environment_are_deployed(api, service):
    version = CodeVersionFactory(service=service)
    Environment.objects.filter(service=service, name="development").update(version=version)
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/development/", {"settings": {"A": "1"}}, format="json"
    )
    assert response.status_code == 202
    operation = Operation.objects.get(pk=response.json()["id"])
    assert operation.params == {
        "environment": "development",
        "version": version.pk,
        "settings": {"A": {"value": "1", "sticky": False}},
    }
    assert Environment.objects.get(service=service, name="development").settings == {}, "applied by the deploy"


def test_settings_of_an_empty_environment_wait_for_its_first_deploy(api, service):
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/development/", {"settings": {"A": "1"}}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["settings"] == {"A": {"value": "1", "sticky": False}}
    assert not Operation.objects.filter(kind="deploy").exists()


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"9LIVES": "x"}, "9LIVES: a setting's name is letters"),
        ({"CONPAAS_SERVICE": "x"}, "CONPAAS_SERVICE: names starting with CONPAAS_ are the platform's"),
        ({"A": {"value": "x", "sticky": 1}}, "A: sticky is true or false"),
        ({"A": None}, "A: the value is a string"),
        ("A=1", "an object of NAME: value"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting_and_nothing_is_stored(api, service, given, error):
    response = api.patch(f"/api/v1/services/{service.pk}/environments/development/", {"settings": given}, format="json")
    assert response.status_code == 400
    assert error in response.json()["settings"][0]
    assert Environment.objects.get(service=service, name="development").settings == {}
    assert not Operation.objects.exists()


def test_production_takes_no_database_copy(api, service):
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/production/", {"database_copy": True}, format="json"
    )
    assert response.status_code == 409
    assert "production uses the linked databases themselves" in response.json()["detail"]
    assert not Environment.objects.get(service=service, name="production").database_copy


def test_it_deletes_an_environment_but_not_production_nor_another_users(api, service, bob):
    assert api.delete(f"/api/v1/services/{service.pk}/environments/production/").status_code == 409
    assert client_for(bob).delete(f"/api/v1/services/{service.pk}/environments/development/").status_code == 404
    assert Environment.objects.filter(service=service, name="development").exists()
    assert api.delete(f"/api/v1/services/{service.pk}/environments/development/").status_code == 204
    assert not Environment.objects.filter(service=service, name="development").exists()
    assert api.delete(f"/api/v1/services/{service.pk}/environments/development/").status_code == 404


def test_the_swap_dry_run_changes_nothing(api, service):
    v1, v2 = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    Environment.objects.filter(service=service, name="production").update(version=v1)
    Environment.objects.filter(service=service, name="development").update(version=v2)
    response = api.post(f"/api/v1/services/{service.pk}/swap/", {"dry_run": True}, format="json")
    assert response.status_code == 200
    plan = response.json()
    assert plan["environments"]["production"]["version_label"] == {"from": "v1", "to": "v2"}
    assert plan["refused"] == "v2 in development is not healthy: v2 runs on 0 of 0 backend node(s)"
    assert Environment.objects.get(service=service, name="production").version == v1
    assert not Operation.objects.filter(kind="swap").exists()


def test_setting_values_are_the_owners_alone(api, service, alice):
    from tests.factories import UserFactory

    Environment.objects.filter(service=service, name="development").update(
        settings={"TOKEN": {"value": "s3cret", "sticky": True}}
    )
    assert api.get(f"/api/v1/services/{service.pk}/environments/").json()[1]["settings"]["TOKEN"]["value"] == "s3cret"
    staff = client_for(UserFactory(username="operator", is_staff=True))
    seen = staff.get(f"/api/v1/services/{service.pk}/environments/development/").json()
    assert seen["settings"] == {"TOKEN": {"value": None, "sticky": True}}


def test_an_operation_names_the_settings_it_deploys_without_their_values(api, service):
    version = CodeVersionFactory(service=service)
    Environment.objects.filter(service=service, name="development").update(version=version)
    response = api.patch(
        f"/api/v1/services/{service.pk}/environments/development/", {"settings": {"TOKEN": "s3cret"}}, format="json"
    )
    assert response.json()["params"]["settings"] == ["TOKEN"]
    assert "s3cret" not in api.get(f"/api/v1/operations/{response.json()['id']}/").content.decode()
