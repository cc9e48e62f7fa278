import os

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from tests.apps import label_app, zip_archive
from tests.factories import CodeVersionFactory, OperationFactory
from tests.uploads import Tripwire

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
    assert 'data-upload-limit-mb="100"' in page and "up to 100 MB" in page  # the script refuses bigger files


def test_it_deletes_an_unused_version_but_not_one_in_use(client, service):
    used, unused = CodeVersionFactory(service=service, label="v1"), CodeVersionFactory(service=service, label="v2")
    service.environments.filter(name="production").update(version=used)
    response = client.post(f"/services/{service.pk}/versions/{used.pk}/delete/", follow=True)
    assert b"v1 is in use by production" in response.content
    client.post(f"/services/{service.pk}/versions/{unused.pk}/delete/")
    assert list(service.versions.values_list("label", flat=True)) == ["v1"]
    assert client.get(f"/services/{service.pk}/versions/{used.pk}/delete/").status_code == 405


def test_it_says_why_a_version_being_deployed_is_not_deleted(client, service):
    version = CodeVersionFactory(service=service, label="v3")
    params = {"environment": "production", "version": version.pk}
    operation = OperationFactory(service=service, kind="deploy", params=params, state="running")
    response = client.post(f"/services/{service.pk}/versions/{version.pk}/delete/", follow=True)
    assert f"v3 is being deployed by operation #{operation.pk}".encode() in response.content
    assert service.versions.filter(pk=version.pk).exists()


def test_it_answers_a_content_length_over_the_limit_before_reading_the_body(client, service, upload_temp_dir):
    body = Tripwire(b"--x\r\n" * 1000)
    response = client.generic(
        "POST",
        f"/services/{service.pk}/versions/",
        CONTENT_TYPE="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(2 * 2**20),
        **{"wsgi.input": body},
        **JSON,
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 1 MB"}
    assert body.bytes_read == 0


def signed_in_browser(user) -> Client:
    """A browser with the CSRF check on: Django reads the token from the form body before the view."""
    browser = Client(enforce_csrf_checks=True)
    browser.get("/login/")  # sets the CSRF cookie
    if user is not None:
        browser.force_login(user)
    return browser


@pytest.mark.parametrize("csrf_checked", [True, False])
def test_it_cuts_off_an_archive_that_grows_past_the_limit(
    client, alice, service, upload_temp_dir, _isolated_archives, csrf_checked
):
    browser = signed_in_browser(alice) if csrf_checked else client
    data = {"archive": SimpleUploadedFile("app.zip", os.urandom(2**20 + 10_000))}
    if csrf_checked:
        data["csrfmiddlewaretoken"] = browser.cookies[settings.CSRF_COOKIE_NAME].value
    response = browser.post(f"/services/{service.pk}/versions/", data, **JSON)
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 1 MB"}
    assert not service.versions.exists()
    assert not any(_isolated_archives.iterdir())
    assert not any(upload_temp_dir.iterdir())


def test_it_writes_nothing_of_a_file_from_nobody_signed_in(service, upload_temp_dir):
    browser = signed_in_browser(None)
    data = {
        "csrfmiddlewaretoken": browser.cookies[settings.CSRF_COOKIE_NAME].value,
        "archive": SimpleUploadedFile("app.zip", label_app("1")),
    }
    response = browser.post(f"/services/{service.pk}/versions/", data, **JSON)
    assert response.status_code == 403
    assert response.json() == {"detail": "sign in before uploading files"}
    assert not service.versions.exists()
    assert not any(upload_temp_dir.iterdir())
