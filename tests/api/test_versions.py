import io
import os

import pytest
from django.conf import settings
from rest_framework.test import APIClient, APIRequestFactory

from services.models import Event, Operation
from tests.apps import label_app, tar_gz_archive, zip_archive
from tests.factories import CodeVersionFactory, NodeFactory, OperationFactory
from tests.uploads import Tripwire
from versions.models import CodeVersion, Instance

pytestmark = pytest.mark.django_db


def upload(api, service, content: bytes, label: str = "", name: str = "app.zip"):
    archive = io.BytesIO(content)
    archive.name = name
    data = {"archive": archive}
    if label:
        data["label"] = label
    return api.post(f"/api/v1/services/{service.pk}/versions/", data, format="multipart")


def test_it_stores_a_valid_version(api, service, _isolated_archives):
    content = label_app("a")
    response = upload(api, service, content, "v1")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) >= {"id", "label", "sha256", "size", "created"}
    assert body["label"] == "v1" and body["size"] == len(content)
    version = CodeVersion.objects.get(pk=body["id"])
    assert version.archive_path.read_bytes() == content


def test_it_labels_versions_in_order_when_no_label_is_given(api, service):
    labels = [upload(api, service, label_app(str(n))).json()["label"] for n in range(3)]
    assert labels == ["v1", "v2", "v3"]


def test_automatic_labels_skip_labels_given_by_hand(api, service):
    assert upload(api, service, label_app("a"), "v1").status_code == 201
    assert upload(api, service, label_app("b")).json()["label"] == "v2"


def test_it_stores_the_same_content_once(api, service, _isolated_archives):
    upload(api, service, label_app("same"), "a")
    upload(api, service, label_app("same"), "b")
    assert CodeVersion.objects.count() == 2
    assert len(list(_isolated_archives.iterdir())) == 1


def test_it_accepts_a_tar_gz(api, service):
    response = upload(api, service, tar_gz_archive({"wsgi.py": "application = None\n"}), name="app.tar.gz")
    assert response.status_code == 201, response.json()
    assert response.json()["kind"] == "tar.gz"


def _zip_with_symlink() -> bytes:
    import stat
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("wsgi.py", "application = None\n")
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _tar_with(kind: str) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"application = None\n"
        info = tarfile.TarInfo("wsgi.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        special = tarfile.TarInfo("special")
        special.type = {"hardlink": tarfile.LNKTYPE, "symlink": tarfile.SYMTYPE}[kind]
        special.linkname = "wsgi.py" if kind == "hardlink" else "/etc/passwd"
        archive.addfile(special)
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("wsgi.py", "application = None\n")
        archive.writestr("zeros.bin", b"\0" * (10 * 2**20))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (zip_archive({"wsgi.py": "application = None\n", "../evil.py": "x"}), "evil.py"),
        (zip_archive({"wsgi.py": "application = None\n", "/etc/cron.d/evil": "x"}), "/etc/cron.d/evil"),
        (tar_gz_archive({"wsgi.py": "application = None\n", "../../evil.py": "x"}), "evil.py"),
        (_zip_with_symlink(), "link"),
        (_tar_with("symlink"), "special"),
        (_tar_with("hardlink"), "special"),
        (_zip_bomb(), "expands"),
        (b"just some text, not an archive\n", "not a zip or tar.gz"),
        (b"", "not a zip or tar.gz"),
        (zip_archive({"app.py": "application = None\n"}), "no WSGI entry point"),
    ],
    ids=[
        "zip-traversal",
        "zip-absolute",
        "tar-traversal",
        "zip-symlink",
        "tar-symlink",
        "tar-hardlink",
        "zip-bomb",
        "text",
        "empty",
        "no-entry-point",
    ],
)
def test_it_refuses_a_bad_archive_and_stores_nothing(api, service, _isolated_archives, content, reason):
    response = upload(api, service, content, "bad")
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not CodeVersion.objects.exists()
    assert list(_isolated_archives.iterdir()) == []


def test_it_takes_an_archive_of_25000_members_as_mediawiki_has(api, service, _isolated_archives, settings):
    settings.CONPAAS_MAX_UPLOAD_MB = 10
    # Code, not empty files: the headers of 25,000 empty members expand more than 100 times.
    files = {"wsgi.py": "application = None\n"} | {f"includes/f{n}.py": os.urandom(32).hex() for n in range(25_000)}
    response = upload(api, service, tar_gz_archive(files), "wiki", name="wiki.tar.gz")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("CONPAAS_ARCHIVE_MAX_MEMBERS", 10, "the archive has 21 members; the limit is 10"),
        ("CONPAAS_ARCHIVE_MAX_EXPANDED_MB", 1, "the archive expands to 1.5 MB; the limit is 1 MB"),
        ("CONPAAS_ARCHIVE_MAX_RATIO", 2, "member 'zeros.bin' expands"),
    ],
)
def test_the_archive_limits_are_settings(api, service, _isolated_archives, settings, setting, value, reason):
    setattr(settings, setting, value)
    files = {"wsgi.py": "application = None\n", "zeros.bin": bytes(3 * 2**19)}
    files |= {f"m{n}.py": "" for n in range(19)}
    response = upload(api, service, zip_archive(files), "over")
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not CodeVersion.objects.exists()
    assert list(_isolated_archives.iterdir()) == []


def test_it_answers_a_content_length_over_the_limit_before_reading_the_body(api, service, upload_temp_dir):
    body = Tripwire(b"--x\r\n" * 1000)
    response = api.generic(
        "POST",
        f"/api/v1/services/{service.pk}/versions/",
        CONTENT_TYPE="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(2 * 2**20),
        **{"wsgi.input": body},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 1 MB"}
    assert body.bytes_read == 0
    assert not CodeVersion.objects.exists()


def test_it_refuses_an_archive_over_the_upload_limit(api, service, upload_temp_dir, _isolated_archives):
    big = zip_archive({"wsgi.py": "application = None\n", "noise.bin": os.urandom(2 * 2**20)})
    response = upload(api, service, big, "big")
    assert response.status_code == 413
    assert "limit of 1 MB" in response.json()["detail"]
    assert list(_isolated_archives.iterdir()) == []
    assert list(upload_temp_dir.iterdir()) == []


@pytest.mark.parametrize("signed_in_with", ["token", "session"])
def test_it_cuts_off_an_archive_that_grows_past_the_limit(
    api, alice, service, upload_temp_dir, _isolated_archives, signed_in_with
):
    # The body declares less than the limit plus the multipart allowance: it is counted as it streams.
    # With a session, DRF's CSRF check parses the body while it authenticates.
    if signed_in_with == "session":
        api = APIClient(enforce_csrf_checks=True)
        api.get("/login/")
        api.force_login(alice)
        api.credentials(HTTP_X_CSRFTOKEN=api.cookies[settings.CSRF_COOKIE_NAME].value)
    response = upload(api, service, os.urandom(2**20 + 10_000), "big")
    assert response.status_code == 413
    assert response.json() == {"detail": "the upload is larger than the limit of 1 MB"}
    assert not CodeVersion.objects.exists()
    assert list(_isolated_archives.iterdir()) == []
    assert list(upload_temp_dir.iterdir()) == []


def test_it_takes_an_archive_just_under_the_limit(api, service, upload_temp_dir):
    response = upload(api, service, zip_archive({"wsgi.py": "application = None\n"}), "small")
    assert response.status_code == 201, response.json()


def test_it_refuses_an_unsigned_upload_without_reading_it(service, upload_temp_dir, _isolated_archives):
    archive = io.BytesIO(label_app("a"))
    archive.name = "app.zip"
    request = APIRequestFactory().post(f"/api/v1/services/{service.pk}/versions/", {"archive": archive})
    body = Tripwire(request.read())
    response = APIClient().generic(
        "POST",
        f"/api/v1/services/{service.pk}/versions/",
        CONTENT_TYPE=request.META["CONTENT_TYPE"],
        CONTENT_LENGTH=str(len(body.body.getvalue())),
        **{"wsgi.input": body},
    )
    assert response.status_code == 401
    assert body.bytes_read == 0
    assert not CodeVersion.objects.exists()
    assert list(upload_temp_dir.iterdir()) == []


def test_it_writes_nothing_of_a_file_sent_to_the_token_call(alice, upload_temp_dir):
    # The token view takes anonymous posts, in JSON or a urlencoded form: a multipart body is not even parsed.
    # (A console form that parses one refuses its file at the first byte: tests/console/test_versions.py.)
    alice.set_password("pw")
    alice.save()
    payload = io.BytesIO(os.urandom(100_000))
    payload.name = "x.bin"
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "pw", "file": payload}, format="multipart"
    )
    assert response.status_code == 415
    assert list(upload_temp_dir.iterdir()) == []


def test_it_refuses_an_upload_without_an_archive(api, service):
    response = api.post(f"/api/v1/services/{service.pk}/versions/", {"label": "v1"}, format="multipart")
    assert response.status_code == 400
    assert "archive" in response.json()["detail"]


def test_it_refuses_a_label_twice(api, service, _isolated_archives):
    assert upload(api, service, label_app("1"), "v1").status_code == 201
    response = upload(api, service, label_app("2"), "v1")
    assert response.status_code == 400
    assert "already has a version labelled 'v1'" in response.json()["detail"]
    assert CodeVersion.objects.count() == 1
    assert len(list(_isolated_archives.iterdir())) == 1


def test_it_refuses_a_bad_label(api, service):
    response = upload(api, service, label_app(), "../x")
    assert response.status_code == 400
    assert not CodeVersion.objects.exists()


def test_it_deletes_an_unused_version(api, service, _isolated_archives):
    version_id = upload(api, service, label_app(), "v1").json()["id"]
    assert api.delete(f"/api/v1/services/{service.pk}/versions/{version_id}/").status_code == 204
    assert not CodeVersion.objects.exists()
    assert list(_isolated_archives.iterdir()) == []


def test_it_refuses_to_delete_a_version_in_use(api, service):
    version = CodeVersionFactory(service=service)
    service.environments.filter(name="production").update(version=version)
    response = api.delete(f"/api/v1/services/{service.pk}/versions/{version.pk}/")
    assert response.status_code == 409
    assert "in use by production" in response.json()["detail"]
    assert CodeVersion.objects.filter(pk=version.pk).exists()


@pytest.mark.parametrize("state", ["pending", "running"])
def test_it_refuses_to_delete_a_version_a_deploy_is_bringing_in(api, service, state):
    version = CodeVersionFactory(service=service, label="v7")
    params = {"environment": "production", "version": version.pk}
    operation = OperationFactory(service=service, kind="deploy", params=params, state=state)

    response = api.delete(f"/api/v1/services/{service.pk}/versions/{version.pk}/")

    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"v7 is being deployed by operation #{operation.pk}; try again when it has finished"
    )
    assert CodeVersion.objects.filter(pk=version.pk).exists()
    assert not Event.objects.filter(action="version.delete").exists()


def test_a_version_whose_deploy_has_ended_can_be_deleted(api, service, _isolated_archives):
    version = CodeVersionFactory(service=service, label="v7")
    OperationFactory(
        service=service, kind="deploy", params={"environment": "production", "version": version.pk}, state="failed"
    )
    OperationFactory(service=service, kind="deploy", params={"environment": "production", "version": 10**6})

    assert api.delete(f"/api/v1/services/{service.pk}/versions/{version.pk}/").status_code == 204
    assert not CodeVersion.objects.filter(pk=version.pk).exists()


def test_it_refuses_to_delete_a_version_that_still_runs_on_a_node(api, service):
    version = CodeVersionFactory(service=service, label="v7")
    node = NodeFactory(service=service, name="shop-1")
    Instance.objects.create(node=node, version=version, port=20000)

    response = api.delete(f"/api/v1/services/{service.pk}/versions/{version.pk}/")

    assert response.status_code == 409
    assert response.json()["detail"].startswith("v7 still runs on shop-1")
    assert Instance.objects.filter(version=version).exists()


def test_deleting_a_service_deletes_its_versions_and_their_instances(service):
    version = CodeVersionFactory(service=service, label="v7")
    Instance.objects.create(node=NodeFactory(service=service), version=version, port=20000)

    service.environments.all().delete()
    service.delete()

    assert not CodeVersion.objects.exists() and not Instance.objects.exists()


def test_an_unknown_version_is_not_found(api, service):
    assert api.get(f"/api/v1/services/{service.pk}/versions/999/").status_code == 404
    assert api.delete(f"/api/v1/services/{service.pk}/versions/999/").status_code == 404
    assert not Operation.objects.exists()


def test_it_signs_in_with_a_urlencoded_form_too(alice):
    alice.set_password("pw")
    alice.save()
    form = "application/x-www-form-urlencoded"
    response = APIClient().post("/api/v1/auth/token/", "username=alice&password=pw", content_type=form)
    assert response.status_code == 200 and response.json()["token"]
    refused = APIClient().post("/api/v1/auth/token/", "username=alice&password=", content_type=form)
    assert refused.status_code == 400 and "password" in refused.json()
