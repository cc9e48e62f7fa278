"""Concurrent requests through the API, each on a thread with its own database connection, on the
database the tests run on (SQLite, or PostgreSQL when DATABASE_URL names it).

Each test holds the two requests at the point where a race would hurt (both past the checks made
before the transaction), so the outcome does not depend on luck: one wins, the other is refused
with the answer the contract names, and nothing of the loser is stored."""

import inspect
import io
import threading

import pytest
from django.db import connection

from api.serializers import DeploySerializer
from api.views.code_versions import CodeVersionViewSet
from services import quotas
from services.models import Operation, Service
from tests.api.conftest import client_for
from tests.apps import label_app
from tests.factories import CodeVersionFactory, ServiceFactory
from versions.models import CodeVersion

pytestmark = pytest.mark.django_db(transaction=True)

# How long a request holding its place waits for the other to reach the same point. With the
# locks in place the other cannot get there (it waits for the first to commit), so this is spent
# once per test; without them both meet at once and both go through.
MEET_TIMEOUT = 1.0


def concurrently(*requests):
    """Run each request on its own thread (and database connection) at once; their answers, in order."""
    answers = [None] * len(requests)
    errors = []

    def run(index, request):
        try:
            answers[index] = request()
        except BaseException as exc:  # noqa: B036 - reported below, in the test's thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, request)) for i, request in enumerate(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a request is stuck"
    assert not errors, errors
    return answers


def meet_after(monkeypatch, *functions: tuple[object, str]):
    """Once a request has run one of `functions` ((owner, name) pairs), it waits up to MEET_TIMEOUT
    for the other request to run one of them too."""
    meeting = threading.Barrier(2, timeout=MEET_TIMEOUT)
    for owner, name in functions:
        real = getattr(owner, name)

        def held(*args, real=real, **kwargs):
            result = real(*args, **kwargs)
            try:
                meeting.wait()
            except threading.BrokenBarrierError:
                pass  # the other is held elsewhere (a lock): go on alone
            return result

        static = isinstance(inspect.getattr_static(owner, name), staticmethod)
        monkeypatch.setattr(owner, name, staticmethod(held) if static else held)


def create(user, name: str):
    return lambda: client_for(user).post("/api/v1/services/", {"name": name, "runtime": "python"}, format="json")


def test_two_creates_of_one_name_give_one_service_and_a_400_naming_the_field(alice, monkeypatch):
    # Both pass the name check made before the transaction; only the database can tell them apart.
    meet_after(monkeypatch, (Service, "validate"))

    answers = concurrently(create(alice, "shop"), create(alice, "shop"))

    assert sorted(answer.status_code for answer in answers) == [201, 400]
    refused = next(answer for answer in answers if answer.status_code == 400)
    assert refused.json() == {"name": ["you already have a service named shop"]}
    assert Service.objects.filter(owner=alice, name="shop").count() == 1
    assert Operation.objects.count() == 1


def test_two_creates_at_one_below_the_services_quota_give_one_service(alice, settings, monkeypatch):
    settings.CONPAAS_QUOTA_SERVICES = 1
    # Each request, having counted the services, waits for the other to count too: without a lock
    # both count none and both create.
    meet_after(monkeypatch, (quotas, "check_new_service"))

    answers = concurrently(create(alice, "first"), create(alice, "second"))

    assert sorted(answer.status_code for answer in answers) == [201, 403]
    refused = next(answer for answer in answers if answer.status_code == 403)
    assert refused.json()["detail"].startswith("quota exceeded: services (1) — you have 1 services")
    assert Service.objects.filter(owner=alice).count() == 1
    assert Operation.objects.count() == 1


def test_two_uploads_at_one_below_the_storage_quota_store_one_archive(alice, settings, monkeypatch, _isolated_archives):
    settings.CONPAAS_QUOTA_STORAGE_MB = 1
    service = ServiceFactory(owner=alice, name="shop")
    CodeVersionFactory(service=service, size=2**20 - len(label_app("a")) - 10)  # room for one more
    meet_after(monkeypatch, (quotas, "check_storage"))

    def upload(build: str):
        archive = io.BytesIO(label_app(build))
        archive.name = "app.zip"
        url = f"/api/v1/services/{service.pk}/versions/"
        return lambda: client_for(alice).post(url, {"archive": archive}, format="multipart")

    answers = concurrently(upload("a"), upload("b"))

    assert sorted(answer.status_code for answer in answers) == [201, 403]
    refused = next(answer for answer in answers if answer.status_code == 403)
    assert refused.json()["detail"].startswith("quota exceeded: storage_mb (1)")
    assert service.versions.count() == 2
    stored = next(answer for answer in answers if answer.status_code == 201).json()
    assert [path.name for path in _isolated_archives.iterdir()] == [f"{stored['sha256']}.zip"]


def test_two_scales_at_one_below_the_nodes_quota_give_one_more_node(alice, settings, monkeypatch):
    settings.CONPAAS_QUOTA_NODES = 3
    shop, blog = ServiceFactory(owner=alice, name="shop"), ServiceFactory(owner=alice, name="blog")
    meet_after(monkeypatch, (quotas, "node_counts"))

    def scale(service):
        url = f"/api/v1/services/{service.pk}/scale/"
        return lambda: client_for(alice).post(url, {"role": "backend", "nodes": 2}, format="json")

    answers = concurrently(scale(shop), scale(blog))

    assert sorted(answer.status_code for answer in answers) == [202, 403]
    refused = next(answer for answer in answers if answer.status_code == 403)
    assert refused.json()["detail"].startswith("quota exceeded: nodes (3) — your services have 3 nodes")
    assert sorted(Service.objects.values_list("backend_nodes", flat=True)) == [1, 2]
    assert Operation.objects.count() == 1


def test_a_version_deleted_while_a_deploy_of_it_is_asked_for_is_one_or_the_other(alice, monkeypatch):
    service = ServiceFactory(owner=alice, name="shop")
    version = CodeVersionFactory(service=service, label="v1")
    # Both past their checks that the version exists, before either has written anything.
    meet_after(monkeypatch, (DeploySerializer, "validate_version"), (CodeVersionViewSet, "_version"))
    url = f"/api/v1/services/{service.pk}"

    deploy, delete = concurrently(
        lambda: client_for(alice).patch(f"{url}/environments/production/", {"version": version.pk}, format="json"),
        lambda: client_for(alice).delete(f"{url}/versions/{version.pk}/"),
    )

    if delete.status_code == 204:  # the delete went first: the deploy finds nothing to deploy
        assert deploy.status_code == 404 and deploy.json()["detail"] == "shop has no version v1 any more"
        assert not CodeVersion.objects.exists() and not Operation.objects.exists()
    else:  # the deploy went first: the version stays, for the deploy to bring in
        assert (deploy.status_code, delete.status_code) == (202, 409), (deploy.json(), delete.json())
        operation = Operation.objects.get()
        assert delete.json()["detail"].startswith(f"v1 is being deployed by operation #{operation.pk}")
        assert CodeVersion.objects.filter(pk=version.pk).exists()
