"""A data service's HTTP answers: its credentials for its owner alone, and what it refuses at
once (a dump that is none, code versions, scaling, environments, autoscaling) with nothing
stored and no operation. Loading into a real server is tests/e2e/test_data_services.py."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from services.models import Event, Operation
from tests.api.conftest import client_for
from tests.factories import NodeFactory, ServiceFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dumps(settings, tmp_path):
    settings.CONPAAS_HOME = tmp_path
    return tmp_path / "dumps"


def data_service(owner, runtime: str):
    service = ServiceFactory(owner=owner, name=f"{runtime}-data", runtime=runtime, password="p" * 32)
    NodeFactory(service=service, address="10.1.0.9", data_port=20001)
    return service


def load(api, service, data: bytes, name: str = "dump.sql"):
    return api.post(f"/api/v1/services/{service.pk}/load/", {"dump": SimpleUploadedFile(name, data)})


def test_the_owner_reads_the_credentials_staff_are_refused_and_others_find_nothing(api, alice, bob):
    database = data_service(alice, "postgresql")

    creds = api.get(f"/api/v1/services/{database.pk}/credentials/").json()
    assert creds == {
        "url": f"postgres://conpaas:{'p' * 32}@10.1.0.9:20001/conpaas",
        "host": "10.1.0.9",
        "port": 20001,
        "user": "conpaas",
        "password": "p" * 32,
        "database": "conpaas",
    }
    staff = client_for(UserFactory(username="staffer", is_staff=True))
    assert staff.get(f"/api/v1/services/{database.pk}/").status_code == 200  # seeing it is not reading its data
    refused = staff.get(f"/api/v1/services/{database.pk}/credentials/")
    assert refused.status_code == 403 and "only the owner of postgresql-data" in refused.json()["detail"]
    assert client_for(bob).get(f"/api/v1/services/{database.pk}/credentials/").status_code == 404


@pytest.mark.parametrize(
    ("runtime", "data", "why"),
    [
        ("postgresql", b"\x00\x01\x02binary", "neither a plain SQL script"),
        ("postgresql", b"", "empty"),
        ("postgresql", b"\x1f\x8b\x08", "gzip"),
        ("mysql", b"\x00\x01\x02binary", "not a SQL script (mysqldump or mariadb-dump, uncompressed)"),
        ("mysql", b"PGDMP\x01", "not a SQL script"),
        ("mysql", b"\x1f\x8b\x08", "gzip"),
    ],
)
def test_what_is_not_a_dump_is_refused_at_once_storing_nothing(api, alice, dumps, runtime, data, why):
    database = data_service(alice, runtime)
    events = Event.objects.count()

    refused = load(api, database, data)

    assert refused.status_code == 400 and why in refused.json()["detail"], refused.content
    assert not Operation.objects.exists() and Event.objects.count() == events
    assert not list(dumps.iterdir())


def test_a_redis_pairs_file_with_a_bad_line_is_refused_naming_it(api, alice, dumps):
    store = data_service(alice, "redis")

    refused = load(api, store, b"a 1\nlonely\n", "keys.txt")

    assert refused.status_code == 400 and "line 2 is not `key value`" in refused.json()["detail"]
    assert not Operation.objects.exists() and not list(dumps.iterdir())


def test_a_code_service_loads_no_dump(api, service, dumps):
    refused = load(api, service, b"CREATE TABLE t (x int);\n")

    assert refused.status_code == 409
    assert refused.json()["detail"] == "shop is a python service: only postgresql, redis and mysql services load dumps"
    assert not Operation.objects.exists()


def test_a_data_service_takes_no_code_version_and_scales_its_servers_only(api, alice, _isolated_archives):
    store = data_service(alice, "redis")

    upload = api.post(
        f"/api/v1/services/{store.pk}/versions/",
        {"archive": SimpleUploadedFile("app.zip", b"PK\x05\x06" + b"\0" * 18)},
    )
    assert upload.status_code == 400 and "has no code versions" in upload.json()["detail"]
    assert not list(_isolated_archives.iterdir())
    for role, nodes, said in (("proxy", 1, "has one router"), ("backend", 6, "runs 1 to 5 servers")):
        scale = api.post(f"/api/v1/services/{store.pk}/scale/", {"role": role, "nodes": nodes}, format="json")
        assert scale.status_code == 409 and said in scale.json()["detail"], scale.json()
    environment = api.post(f"/api/v1/services/{store.pk}/environments/", {"name": "staging"}, format="json")
    assert environment.status_code == 409 and "a redis service has no environments" in environment.json()["detail"]
    autoscaling = api.put(f"/api/v1/services/{store.pk}/autoscaling/", {"enabled": True}, format="json")
    assert autoscaling.status_code == 409 and "has no autoscaling" in autoscaling.json()["detail"]
    assert not Operation.objects.exists() and not store.environments.filter(name="staging").exists()
    settings = api.patch(
        f"/api/v1/services/{store.pk}/environments/production/", {"settings": {"A": "1"}}, format="json"
    )
    assert settings.status_code == 409 and "has no environments" in settings.json()["detail"]
    assert store.environments.get(name="production").settings == {}
