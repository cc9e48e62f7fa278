"""A data service's page: its address, a dump form instead of code uploads, a load's live counter."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from services.models import Operation
from tests.factories import ServiceFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def database(alice):
    return ServiceFactory(owner=alice, name="wikidb", runtime="postgresql", password="p" * 32)


def test_it_offers_a_dump_load_instead_of_a_code_upload(client, database):
    page = client.get(f"/services/{database.pk}/").content.decode()
    assert "Load a dump" in page and "pg_dump -Fc" in page
    assert "Upload a code version" not in page
    assert database.password not in page
    # What only code runs has no place on it: environments, versions, swaps, request metrics.
    for panel in ("Add an environment", "Autoscaling", "Swap with production", "Code versions", 'id="metrics"'):
        assert panel not in page, panel


def test_it_starts_a_load_whose_counter_the_activity_shows(client, database, settings, tmp_path):
    settings.CONPAAS_HOME = tmp_path
    dump = SimpleUploadedFile("wiki.sql", b"CREATE TABLE pages (id int);\n")
    response = client.post(f"/services/{database.pk}/load/", {"dump": dump})
    assert response.status_code == 302 and response["Location"].endswith("#activity")
    operation = Operation.objects.get(service=database, kind="load")
    operation.set_counters("12 of 30 bytes read, 4 rows loaded", {"bytes_read": 12, "bytes_total": 30, "items": 4})

    fragment = client.get(f"/services/{database.pk}/activity/").content.decode()
    assert "12 of 30 bytes read, 4 rows loaded" in fragment
    assert 'value="12" max="30"' in fragment and 'hx-trigger="every 2s"' in fragment


def test_it_refuses_a_bad_dump_in_place_and_stores_nothing(client, database, settings, tmp_path):
    settings.CONPAAS_HOME = tmp_path
    response = client.post(
        f"/services/{database.pk}/load/", {"dump": SimpleUploadedFile("x.sql", b"\x00\x01")}, follow=True
    )
    assert "Load refused: the dump is neither a plain SQL script" in response.content.decode()
    assert not Operation.objects.filter(kind="load").exists()
    assert not list((tmp_path / "dumps").iterdir())
