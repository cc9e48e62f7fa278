"""The applications API: list, create, delete, and applying a manifest (dry run and for real)."""

import io

import pytest

from services.choices import ServiceState
from services.models import Application, Operation, Service
from tests.apps import label_app
from tests.factories import ServiceFactory
from versions.models import CodeVersion, Environment

from .conftest import client_for

pytestmark = pytest.mark.django_db

MANIFEST = """\
application: shop
services:
  web:
    runtime: python
    versions: {v1: ./web-v1.zip}
    environments: {production: v1}
"""


def post_manifest(api, text=MANIFEST, files=None, dry_run=False):
    data = {"manifest": text, "dry_run": "true" if dry_run else "false"}
    for path, content in ({"./web-v1.zip": label_app("1")} if files is None else files).items():
        data[path] = io.BytesIO(content)
        data[path].name = path.rsplit("/", 1)[-1]
    return api.post("/api/v1/applications/apply/", data, format="multipart")


def test_it_answers_the_plan_of_a_dry_run_and_changes_nothing(api, _isolated_archives):
    response = post_manifest(api, dry_run=True)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["application"] == "shop" and body["dry_run"] is True
    assert body["created"][:2] == ["application shop", "service web (python)"]
    assert body["changed"] == ["web/production: deploy v1"]
    assert body["removed"] == [] and body["operations"] == []
    assert not Application.objects.exists() and not Service.objects.exists()


def test_it_applies_a_manifest_and_lists_the_application(api, alice, _isolated_archives):
    response = post_manifest(api)

    assert response.status_code == 202, response.json()
    assert sorted(o["kind"] for o in response.json()["operations"]) == ["create", "deploy"]
    service = Service.objects.get(owner=alice, name="web")
    assert service.application.name == "shop"
    assert service.versions.get().label == "v1"
    listed = api.get("/api/v1/applications/").json()
    assert listed == [
        {"id": service.application_id, "name": "shop", "services": ["web"], "created": listed[0]["created"]}
    ]


def test_applying_the_same_manifest_again_answers_200_with_an_empty_plan(api, _isolated_archives):
    assert post_manifest(api).status_code == 202
    # As the workers leave it: created, and v1 deployed.
    Service.objects.update(state=ServiceState.RUNNING)
    Operation.objects.update(state="succeeded")
    Environment.objects.filter(name="production").update(version=CodeVersion.objects.get())

    response = post_manifest(api)

    assert response.status_code == 200, response.json()
    assert (response.json()["created"], response.json()["changed"], response.json()["removed"]) == ([], [], [])


@pytest.mark.parametrize(
    "text, files, error",
    [
        ("application: shop\nservices: {web: {runtime: python, nodes: 0}}\n", {}, "services.web.nodes: must be ≥ 1"),
        ("application: [\n", {}, "manifest: not valid YAML"),
        (MANIFEST, {}, "services.web.versions.v1: no file uploaded for ./web-v1.zip"),
        (MANIFEST, {"./web-v1.zip": b"not a zip"}, "services.web.versions.v1: ./web-v1.zip: "),
    ],
)
def test_it_refuses_a_bad_manifest_naming_the_path(api, text, files, error):
    response = post_manifest(api, text, files)

    assert response.status_code == 400
    assert any(line.startswith(error) for line in response.json()["manifest"]), response.json()
    assert not Application.objects.exists() and not Service.objects.exists() and not Operation.objects.exists()


def test_it_asks_for_the_manifest(api):
    response = api.post("/api/v1/applications/apply/", {"dry_run": "true"}, format="multipart")

    assert response.status_code == 400
    assert "manifest" in response.json()


def test_it_creates_an_empty_application_and_refuses_a_taken_or_bad_name(api, alice):
    assert api.post("/api/v1/applications/", {"name": "shop"}, format="json").status_code == 201
    taken = api.post("/api/v1/applications/", {"name": "shop"}, format="json")
    bad = api.post("/api/v1/applications/", {"name": "Shop!"}, format="json")

    assert taken.status_code == 400 and taken.json()["name"] == ["you already have an application named shop"]
    assert bad.status_code == 400 and "name" in bad.json()
    assert list(Application.objects.values_list("name", flat=True)) == ["shop"]


def test_deleting_an_application_deletes_its_services(api, alice):
    application = Application.objects.create(owner=alice, name="shop")
    ServiceFactory(owner=alice, name="web", application=application)
    ServiceFactory(owner=alice, name="api", application=application)
    alone = ServiceFactory(owner=alice, name="alone")

    response = api.delete(f"/api/v1/applications/{application.pk}/")

    assert response.status_code == 202
    assert sorted(o["service_name"] for o in response.json()) == ["api", "web"]
    assert not Application.objects.exists()
    assert set(Service.objects.filter(state=ServiceState.DELETING).values_list("name", flat=True)) == {"api", "web"}
    assert Service.objects.get(pk=alone.pk).state == ServiceState.RUNNING


def test_another_users_application_is_not_found(alice, bob):
    application = Application.objects.create(owner=alice, name="shop")
    api = client_for(bob)

    assert api.get("/api/v1/applications/").json() == []
    assert api.get(f"/api/v1/applications/{application.pk}/").status_code == 404
    assert api.delete(f"/api/v1/applications/{application.pk}/").status_code == 404
    assert Application.objects.exists()
