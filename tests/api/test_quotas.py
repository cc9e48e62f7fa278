"""Quotas through the API: each one refused with 403 naming the quota and its value, nothing stored."""

import hashlib
import io

import pytest

from conpaas_site import settings as site
from services import quotas
from services.choices import NodeState, ServiceState
from services.models import Event, Node, Operation, Quota, Service
from tests.api.conftest import client_for
from tests.apps import label_app
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory, UserFactory
from versions.models import CodeVersion, Environment

pytestmark = pytest.mark.django_db

MB = 2**20


def create(api, name="fresh"):
    return api.post("/api/v1/services/", {"name": name, "runtime": "python"}, format="json")


def upload(api, service, content: bytes):
    archive = io.BytesIO(content)
    archive.name = "app.zip"
    return api.post(f"/api/v1/services/{service.pk}/versions/", {"archive": archive}, format="multipart")


def scale(api, service, nodes: int):
    return api.post(f"/api/v1/services/{service.pk}/scale/", {"role": "backend", "nodes": nodes}, format="json")


def test_it_refuses_a_service_past_the_services_quota(api, alice, settings):
    settings.CONPAAS_QUOTA_SERVICES = 2
    ServiceFactory.create_batch(2, owner=alice)
    response = create(api)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("quota exceeded: services (2) — you have 2 services")
    assert not Service.objects.filter(name="fresh").exists()
    assert not Operation.objects.exists()


def test_it_creates_a_service_within_the_quota(api, alice, settings):
    settings.CONPAAS_QUOTA_SERVICES = 2
    ServiceFactory(owner=alice)
    assert create(api).status_code == 201


def test_a_service_being_deleted_no_longer_counts(api, alice, settings):
    settings.CONPAAS_QUOTA_SERVICES = 1
    ServiceFactory(owner=alice, state=ServiceState.DELETING)
    assert create(api).status_code == 201


def test_other_users_services_do_not_count(api, bob, settings):
    settings.CONPAAS_QUOTA_SERVICES = 1
    ServiceFactory(owner=bob)
    assert create(api).status_code == 201


def test_a_per_user_override_replaces_the_default(api, alice, settings):
    settings.CONPAAS_QUOTA_SERVICES = 1
    ServiceFactory(owner=alice)
    Quota.objects.create(user=alice, services=2)
    assert create(api, "second").status_code == 201
    response = create(api, "third")
    assert response.status_code == 403
    assert "services (2)" in response.json()["detail"]


def test_staff_follow_the_same_quotas(settings):
    settings.CONPAAS_QUOTA_SERVICES = 0
    staff = UserFactory(username="operator", is_staff=True)
    assert create(client_for(staff)).status_code == 403


def test_a_new_service_counts_its_first_node(api, alice, service, settings):
    settings.CONPAAS_QUOTA_NODES = 3
    scale(api, service, 3)  # desired 3 counts at once, before any node boots
    Operation.objects.all().delete()
    response = create(api)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("quota exceeded: nodes (3) — your services have 3 nodes")
    assert not Service.objects.filter(name="fresh").exists()


def test_it_refuses_a_scale_past_the_nodes_quota_of_all_services_together(api, alice, service, settings):
    settings.CONPAAS_QUOTA_NODES = 4
    other = ServiceFactory(owner=alice, name="other")
    NodeFactory(service=other, is_proxy=True)
    NodeFactory(service=other)
    NodeFactory(service=service, is_proxy=True)
    NodeFactory(service=service, state=NodeState.DESTROYED)  # gone: counts for nothing
    response = scale(api, service, 3)
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert detail.startswith("quota exceeded: nodes (4) — your services have 3 nodes and this would make 5")
    assert Service.objects.get(pk=service.pk).backend_nodes == 1
    assert not Operation.objects.exists()
    assert scale(api, service, 2).status_code == 202


def test_scaling_down_is_allowed_over_the_quota(api, service, settings):
    settings.CONPAAS_QUOTA_NODES = 1
    NodeFactory(service=service, is_proxy=True)
    NodeFactory(service=service)
    NodeFactory(service=service)
    assert scale(api, service, 2).status_code == 202


def test_it_refuses_an_environment_past_the_environments_quota(api, service, settings):
    settings.CONPAAS_QUOTA_ENVIRONMENTS = 2  # production and development
    response = api.post(f"/api/v1/services/{service.pk}/environments/", {"name": "staging"}, format="json")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("quota exceeded: environments (2) — shop has 2 environments")
    assert not Environment.objects.filter(name="staging").exists()
    assert not Operation.objects.exists() and not Event.objects.exists()


def test_the_environments_quota_is_per_service(api, alice, service, settings):
    settings.CONPAAS_QUOTA_ENVIRONMENTS = 3
    ServiceFactory(owner=alice, name="other")
    response = api.post(f"/api/v1/services/{service.pk}/environments/", {"name": "staging"}, format="json")
    assert response.status_code == 201, response.json()


def test_it_refuses_an_upload_past_the_storage_quota(api, alice, service, settings, _isolated_archives):
    settings.CONPAAS_QUOTA_STORAGE_MB = 1
    CodeVersionFactory(service=ServiceFactory(owner=alice), size=MB - 10)  # another service of hers counts
    response = upload(api, service, label_app("new"))
    assert response.status_code == 403
    assert response.json()["detail"].startswith("quota exceeded: storage_mb (1) — your archives take 1.0 MB")
    assert not service.versions.exists()
    assert list(_isolated_archives.iterdir()) == []


def test_content_already_stored_costs_nothing_more(api, alice, service, settings):
    settings.CONPAAS_QUOTA_STORAGE_MB = 1
    content = label_app("same")
    CodeVersionFactory(service=service, sha256=hashlib.sha256(content).hexdigest(), size=MB - 10)
    assert upload(api, service, content).status_code == 201


def test_the_same_content_in_two_versions_counts_once(api, alice, service, settings):
    settings.CONPAAS_QUOTA_STORAGE_MB = 1
    CodeVersionFactory(service=service, sha256="a" * 64, size=MB // 2)
    CodeVersionFactory(service=service, sha256="a" * 64, size=MB // 2)
    assert upload(api, service, label_app("new")).status_code == 201
    assert CodeVersion.objects.count() == 3


def test_a_storage_override_in_the_admin_allows_more(api, alice, service, settings):
    settings.CONPAAS_QUOTA_STORAGE_MB = 0
    assert upload(api, service, label_app("a")).status_code == 403
    Quota.objects.create(user=alice, storage_mb=1)
    assert upload(api, service, label_app("a")).status_code == 201


def test_the_defaults_come_from_settings(settings, alice):
    assert quotas.limit(alice, "nodes") == settings.CONPAAS_QUOTA_NODES
    settings.CONPAAS_QUOTA_NODES = 7
    assert quotas.limit(alice, "nodes") == 7
    Quota.objects.create(user=alice, services=5)  # other quotas left empty keep their default
    assert quotas.limit(alice, "nodes") == 7 and quotas.limit(alice, "services") == 5


def test_the_built_in_defaults():
    assert (site.CONPAAS_QUOTA_SERVICES, site.CONPAAS_QUOTA_NODES) == (20, 40)
    assert (site.CONPAAS_QUOTA_ENVIRONMENTS, site.CONPAAS_QUOTA_STORAGE_MB) == (10, 2048)


def test_nodes_that_failed_to_boot_do_not_count(api, service, settings):
    settings.CONPAAS_QUOTA_NODES = 2
    NodeFactory(service=service, is_proxy=True)
    NodeFactory(service=service, state=NodeState.FAILED)
    assert scale(api, service, 2).status_code == 202
    assert Node.objects.count() == 2
