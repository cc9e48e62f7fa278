"""A whole application from one manifest with settings and a preview database, end to end: a
python service linked to a PostgreSQL service loaded from a dump; development gets its own copy of
the database, so what a preview writes never reaches production; sticky settings stay with their
environment on a swap, travelling ones follow the version; deleting the environment drops its copy."""

from pathlib import Path

import pytest
import requests

from tests.apps import zip_archive
from tests.e2e.test_data_services import psql

pytestmark = pytest.mark.integration

# The notes example (examples/notes): reads and writes the linked database with psql, and answers
# what it runs with: its version, two settings and the notes it reads.
NOTES_APP = (Path(__file__).resolve().parents[2] / "examples" / "notes" / "web" / "wsgi.py").read_text()

MANIFEST = """\
application: notes
services:
  db:
    runtime: postgresql
    dump: ./notes.sql
  web:
    runtime: python
    links: [db]
    versions: {v1: ./v1.zip, v2: ./v2.zip}
    settings:
      GREETING: hello
      PAYMENT_API: {value: live, sticky: true}
    environments:
      production: v1
      development:
        version: v2
        database: copy
        settings:
          GREETING: hi
          PAYMENT_API: {value: sandbox, sticky: true}
"""

DUMP = b"CREATE TABLE notes (text text);\nINSERT INTO notes VALUES ('dumped');\n"


@pytest.fixture
def api(control_plane):
    return control_plane.client("nora")


@pytest.fixture
def notes(api):
    files = {
        "./v1.zip": ("v1.zip", zip_archive({"wsgi.py": NOTES_APP})),
        "./v2.zip": ("v2.zip", zip_archive({"wsgi.py": NOTES_APP + "# the second version\n"})),
        "./notes.sql": ("notes.sql", DUMP),
    }
    applied = api.post("/api/v1/applications/apply/", data={"manifest": MANIFEST}, files=files)
    assert applied.status_code in (200, 202), applied.text
    try:
        for operation in applied.json()["operations"]:
            done = api.wait_operation(operation, timeout=180)
            assert done["state"] == "succeeded", done["error"]
        yield {s["name"]: s for s in api.get("/api/v1/services/").json()}
    finally:
        application = next(a for a in api.get("/api/v1/applications/").json() if a["name"] == "notes")
        for operation in api.delete(f"/api/v1/applications/{application['id']}/").json():
            api.wait_operation(operation, timeout=120)


def test_a_preview_writes_its_own_copy_and_settings_stick_or_travel_across_a_swap(api, notes):
    web, db = notes["web"], notes["db"]
    environments = {e["name"]: e for e in api.get(f"/api/v1/services/{web['id']}/environments/").json()}
    development = environments["development"]
    assert development["database_copy"] is True
    preview = {"X-Conpaas-Env": development["preview_key"]}

    def production_page(**kwargs):
        return requests.get(web["url"], timeout=30, **kwargs).text

    def preview_page():
        return requests.get(web["url"], headers=preview, timeout=30).text

    assert production_page() == "v1 hello live dumped\n"
    assert preview_page() == "v2 hi sandbox dumped\n"  # the copy holds what production held

    written = requests.post(web["url"], params={"note": "previewed"}, headers=preview, timeout=30)
    assert written.text == "v2 hi sandbox dumped,previewed\n"
    assert production_page() == "v1 hello live dumped\n"  # production's data untouched
    creds = api.get(f"/api/v1/services/{db['id']}/credentials/").json()
    assert psql(creds, "SELECT count(*) FROM notes").stdout.strip() == "1"

    plan = api.post(f"/api/v1/services/{web['id']}/swap/", json={"environment": "development", "dry_run": True})
    assert plan.status_code == 200, plan.text
    assert plan.json()["refused"] is None and plan.json()["starts_instances"] is True
    assert plan.json()["environments"]["production"]["settings"] == {
        "GREETING": {"from": "hello", "to": "hi", "sticky": False}
    }
    assert production_page() == "v1 hello live dumped\n"  # a dry run changes nothing

    swapped = api.post(f"/api/v1/services/{web['id']}/swap/", json={"environment": "development"})
    assert swapped.status_code == 200, swapped.text

    # v2 came to production with its travelling GREETING; production kept its PAYMENT_API and its
    # database; development kept its copy (with the preview's note) and its sticky setting.
    assert production_page() == "v2 hi live dumped\n"
    assert preview_page() == "v1 hello sandbox dumped,previewed\n"

    events = api.get(f"/api/v1/services/{web['id']}/events/").text
    assert "got its own copy of db" in events
    assert creds["password"] not in events
    assert creds["password"] not in api.get(f"/api/v1/services/{web['id']}/environments/").text

    copies = "SELECT count(*) FROM pg_database WHERE datname LIKE 'copy_%'"
    assert psql(creds, copies).stdout.strip() == "1"
    deleted = api.delete(f"/api/v1/services/{web['id']}/environments/development/")
    assert deleted.status_code == 204, deleted.text
    assert psql(creds, copies).stdout.strip() == "0"  # dropped with the environment
    assert production_page() == "v2 hi live dumped\n"
