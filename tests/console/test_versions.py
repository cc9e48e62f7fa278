import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.apps import label_app, zip_archive
from tests.factories import CodeVersionFactory

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def test_it_stores_an_upload_and_answers_the_script(client, service):
    archive = SimpleUploadedFile("app.zip", label_app("1"))
    response = client.post(f"/services/{service.pk}/versions/", {"archive": archive, "label": "v1"}, **JSON)
    assert response.status_code == 201, response.content
    assert response.json()["label"] == "v1"
    assert service.versions.get().label == "v1"


def test_it_answers_the_refusal_reason_and_stores_nothing(client, service, _isolated_archives):
    archive = SimpleUploadedFile("app.zip", zip_archive({"index.html": "<p>no wsgi</p>"}))
    response = client.post(f"/services/{service.pk}/versions/", {"archive": archive}, **JSON)
    assert response.status_code == 400
    assert response.json()["error"].startswith("Upload refused: ")
    assert len(response.json()["error"]) > len("Upload refused: ")
    assert not service.versions.exists()
    assert not any(_isolated_archives.iterdir())


def test_it_falls_back_to_a_plain_form_post(client, service):
    archive = SimpleUploadedFile("app.zip", label_app("1"))
    response = client.post(f"/services/{service.pk}/versions/", {"archive": archive}, follow=True)
    assert b"Uploaded v1." in response.content
    refused = client.post(f"/services/{service.pk}/versions/", {}, follow=True)
    assert b"Upload refused: Choose an archive to upload." in refused.content


def test_the_service_page_has_a_labelled_drop_zone(client, service):
    page = client.get(f"/services/{service.pk}/").content.decode()
    assert '<label class="dropzone" for="id_archive"' in page
    assert 'aria-live="polite"' in page and 'role="alert"' in page


def test_it_deletes_an_unused_version_but_not_one_in_use(client, service):
    used, unused = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    service.environments.filter(name="production").update(version=used)
    response = client.post(f"/services/{service.pk}/versions/{used.pk}/delete/", follow=True)
    assert b"v1 is in use by production" in response.content
    client.post(f"/services/{service.pk}/versions/{unused.pk}/delete/")
    assert list(service.versions.values_list("label", flat=True)) == ["v1"]
    assert client.get(f"/services/{service.pk}/versions/{used.pk}/delete/").status_code == 405
