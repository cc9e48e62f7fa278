import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ

from services.models import Event, Link, Node, Operation, Service
from tests.api.conftest import client_for
from tests.factories import CodeVersionFactory, ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_refuses_calls_without_a_token():
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/services/").status_code == 401


def test_it_creates_a_service_with_production_and_development(api, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/services/", {"name": "blog", "runtime": "python"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "blog" and body["state"] == "creating"
    assert body["operation"]["kind"] == "create" and body["operation"]["state"] == "pending"
    service = Service.objects.get(pk=body["id"])
    assert service.owner == alice
    environments = {e.name: e for e in service.environments.all()}
    assert set(environments) == {"production", "development"}
    assert environments["production"].preview_key is None
    assert len(environments["development"].preview_key) >= 20
    operation = Operation.objects.get(service=service)
    assert operation.kind == "create" and operation.state == "pending"
    assert OrmQ.objects.count() == 1, "the create operation is queued for the workers"
    assert Event.objects.filter(service=service).exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Bad Name", "runtime": "python"}, "name"),
        ({"name": "x", "runtime": "python"}, "name"),
        ({"name": "blog", "runtime": "cobol"}, "runtime"),
        ({"name": "blog", "runtime": "java", "java_heap_mb": 16}, "java_heap_mb"),
        ({"name": "blog", "runtime": "python", "java_heap_mb": 512}, "java_heap_mb"),
        ({"runtime": "python"}, "name"),
    ],
)
def test_it_refuses_a_bad_service(api, payload, field):
    response = api.post("/api/v1/services/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Service.objects.exists()


def test_it_refuses_a_second_service_with_the_same_name(api, service):
    response = api.post("/api/v1/services/", {"name": "shop", "runtime": "python"}, format="json")
    assert response.status_code == 400
    assert "already have a service named shop" in response.json()["name"][0]


def test_it_lists_only_my_services(api, service, bob):
    ServiceFactory(owner=bob, name="other")
    names = [s["name"] for s in api.get("/api/v1/services/").json()]
    assert names == ["shop"]


def test_staff_see_every_service(service, bob):
    staff = UserFactory(username="root", is_staff=True)
    ServiceFactory(owner=bob, name="other")
    names = sorted(s["name"] for s in client_for(staff).get("/api/v1/services/").json())
    assert names == ["other", "shop"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/services/{id}/"),
        ("delete", "/api/v1/services/{id}/"),
        ("get", "/api/v1/services/{id}/versions/"),
        ("post", "/api/v1/services/{id}/versions/"),
        ("get", "/api/v1/services/{id}/environments/"),
        ("post", "/api/v1/services/{id}/environments/"),
        ("patch", "/api/v1/services/{id}/environments/production/"),
        ("post", "/api/v1/services/{id}/swap/"),
        ("post", "/api/v1/services/{id}/scale/"),
        ("get", "/api/v1/services/{id}/nodes/"),
        ("get", "/api/v1/services/{id}/events/"),
    ],
)
def test_another_users_service_is_not_found(service, bob, method, path):
    response = getattr(client_for(bob), method)(path.format(id=service.pk), {}, format="json")
    assert response.status_code == 404
    service.refresh_from_db()
    assert service.state == "running"
    assert not Operation.objects.exists()


def test_an_unknown_service_is_not_found(api):
    assert api.get("/api/v1/services/999/").status_code == 404
    assert api.get("/api/v1/services/999/environments/").status_code == 404


def test_it_deletes_a_service_as_an_operation(api, service):
    response = api.delete(f"/api/v1/services/{service.pk}/")
    assert response.status_code == 202
    assert response.json()["kind"] == "delete"
    service.refresh_from_db()
    assert service.state == "deleting"


def test_it_refuses_to_delete_a_service_others_link_naming_them(api, alice):
    phpdb = ServiceFactory(owner=alice, name="phpdb", runtime="postgresql")
    for name in ("site", "shop"):
        Link.objects.create(service=ServiceFactory(owner=alice, name=name), target=phpdb)

    response = api.delete(f"/api/v1/services/{phpdb.pk}/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "phpdb is linked by shop, site: delete them or unlink it from their manifest first, "
        "or force the delete"
    }
    phpdb.refresh_from_db()
    assert phpdb.state == "running"
    assert not Operation.objects.exists() and not OrmQ.objects.exists()


def test_a_forced_delete_of_a_linked_service_starts_and_says_who_keeps_a_dead_link(api, alice):
    phpdb = ServiceFactory(owner=alice, name="phpdb", runtime="postgresql")
    Link.objects.create(service=ServiceFactory(owner=alice, name="site"), target=phpdb)

    response = api.delete(f"/api/v1/services/{phpdb.pk}/?force=true")

    assert response.status_code == 202 and response.json()["kind"] == "delete"
    event = Event.objects.get(service=phpdb, action="delete")
    assert event.message == "deletion of phpdb requested (forced); left with a dead link: site"


def test_it_refuses_a_force_that_is_not_a_boolean(api, service):
    response = api.delete(f"/api/v1/services/{service.pk}/?force=maybe")

    assert response.status_code == 400 and "force" in response.json()
    assert not Operation.objects.exists()


def test_it_starts_a_scale_operation(api, service):
    response = api.post(f"/api/v1/services/{service.pk}/scale/", {"role": "backend", "nodes": 3}, format="json")
    assert response.status_code == 202
    assert response.json()["params"] == {"role": "backend", "nodes": 3}
    service.refresh_from_db()
    assert service.backend_nodes == 3


@pytest.mark.parametrize(
    "payload", [{"role": "backend", "nodes": 0}, {"role": "cache", "nodes": 1}, {"role": "proxy", "nodes": 2}, {}]
)
def test_it_refuses_a_bad_scale(api, service, payload):
    response = api.post(f"/api/v1/services/{service.pk}/scale/", payload, format="json")
    assert response.status_code == 400
    assert not Operation.objects.exists()


def test_operations_of_other_users_are_not_found(api, service, bob):
    operation = Operation.objects.create(service=service, service_name="shop", owner=service.owner, kind="deploy")
    assert api.get(f"/api/v1/operations/{operation.pk}/").status_code == 200
    assert client_for(bob).get(f"/api/v1/operations/{operation.pk}/").status_code == 404


def test_it_serves_the_openapi_schema(api):
    response = api.get("/api/schema/")
    assert response.status_code == 200
    assert b"/api/v1/services/{id}/swap/" in response.content


def test_it_refuses_new_operations_while_the_service_is_being_deleted(api, service):
    version = CodeVersionFactory(service=service)
    assert api.delete(f"/api/v1/services/{service.pk}/").status_code == 202
    deploy = api.patch(
        f"/api/v1/services/{service.pk}/environments/production/", {"version": version.pk}, format="json"
    )
    assert deploy.status_code == 409
    assert "being deleted" in deploy.json()["detail"]
    scale = api.post(f"/api/v1/services/{service.pk}/scale/", {"role": "backend", "nodes": 2}, format="json")
    assert scale.status_code == 409
    swap = api.post(f"/api/v1/services/{service.pk}/swap/", {}, format="json")
    assert swap.status_code == 409
    assert list(Operation.objects.values_list("kind", flat=True)) == ["delete"]


def test_operations_left_behind_by_a_deleted_service_end(service):
    from services.operations import end_orphans

    orphan = Operation.objects.create(service=service, service_name="shop", kind="deploy")
    service.delete()
    end_orphans()
    orphan.refresh_from_db()
    assert orphan.state == "failed" and "deleted" in orphan.error


def test_it_lists_the_events_newer_than_since(api, service):
    first, second, third = (Event.record(service, "note", f"event {n}") for n in range(3))
    response = api.get(f"/api/v1/services/{service.pk}/events/", {"since": first.pk})
    assert response.status_code == 200
    assert [event["id"] for event in response.json()] == [third.pk, second.pk], "newest first, after `since`"


@pytest.mark.parametrize("since", ["abc", "1.5", "1e3", ""])
def test_it_refuses_a_since_that_is_not_an_event_id(api, service, since):
    response = api.get(f"/api/v1/services/{service.pk}/events/", {"since": since})
    assert response.status_code == 400
    assert "since" in response.json()


def test_the_list_makes_the_same_queries_for_any_number_of_services(api, alice):
    from tests.factories import CodeVersionFactory

    def add(count: int, start: int) -> None:
        for n in range(start, start + count):
            service = ServiceFactory(owner=alice, name=f"app-{n:03d}")
            Node.objects.create(
                service=service,
                name=f"app-{n:03d}-1",
                cloud="local",
                is_proxy=True,
                is_backend=True,
                state="running",
                address="127.0.0.1",
                agent_port=9,
                http_port=8000 + n,
            )
            version = CodeVersionFactory(service=service, label="v1")
            service.environments.filter(name="production").update(version=version)

    def queries() -> tuple[int, list]:
        with CaptureQueriesContext(connection) as captured:
            response = api.get("/api/v1/services/")
        assert response.status_code == 200
        return len(captured), response.json()

    api.get("/api/v1/services/")  # a token's first use is noted once (last_used): not the list's doing
    add(3, 0)
    few, _ = queries()
    add(40, 3)
    many, body = queries()
    assert many == few
    assert len(body) == 43
    first = body[0]
    assert first["url"] == "http://127.0.0.1:8000/"
    assert first["nodes"][0]["name"] == "app-000-1"
    development = next(env for env in first["environments"] if env["name"] == "development")
    assert development["preview_url"] == f"http://127.0.0.1:8000/?conpaas-env={development['preview_key']}"


def test_the_list_answers_what_the_service_serializer_answers(api, alice, service):
    other = ServiceFactory(owner=alice, name="blog")
    for n, (state, is_proxy) in enumerate(
        [("destroyed", True), ("booting", True), ("running", True), ("running", False), ("failed", False)]
    ):
        Node.objects.create(
            service=service,
            name=f"shop-{n}",
            cloud="local",
            is_proxy=is_proxy,
            is_backend=True,
            state=state,
            address=f"10.0.0.{n}",
            agent_port=9,
            http_port=8000 + n,
        )
    version = CodeVersionFactory(service=service, label="v3")
    service.environments.filter(name="development").update(version=version, preview_key="readable-key")
    service.environments.create(name="staging")

    listed = api.get("/api/v1/services/").json()
    # Each service as the serializer shows it (the retrieve call), in the list's order (by name).
    assert listed == [api.get(f"/api/v1/services/{pk}/").json() for pk in (other.pk, service.pk)]
    shop = listed[1]
    assert shop["url"] == "http://10.0.0.2:8002/"
    assert [node["name"] for node in shop["nodes"]] == ["shop-1", "shop-2", "shop-3", "shop-4"]
    assert [env["name"] for env in shop["environments"]] == ["production", "development", "staging"]


@pytest.mark.parametrize("path", ["/api/v1/services/abc/", "/api/v1/nothing/", "/api/v1/services/1.5/nodes/"])
def test_a_path_of_the_api_that_matches_nothing_is_a_json_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_console_path_that_matches_nothing_is_still_a_page(api):
    response = api.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "body",
    [{"data": {"environment": ""}, "format": "multipart"}, {"data": "environment=", "content_type": "text/plain"}],
)
def test_it_refuses_a_body_that_is_not_json(api, service, body):
    # In a form an empty field reads as a missing one: `environment=` would have swapped development.
    response = api.post(f"/api/v1/services/{service.pk}/swap/", **body)
    assert response.status_code == 415
    assert "Unsupported media type" in response.json()["detail"]
    created = api.post("/api/v1/services/", {"name": "blog", "runtime": "python"}, format="multipart")
    assert created.status_code == 415
    assert not Service.objects.filter(name="blog").exists()
    assert not Operation.objects.exists() and not Event.objects.filter(action="swap").exists()
