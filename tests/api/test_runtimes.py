"""php, java and static services through the API: creating them, the JVM heap, their archives."""

import io

import pytest

from services.models import Event, Service
from tests.api.conftest import client_for
from tests.apps import java_label_war, php_label_app, static_label_site, tar_gz_archive, zip_archive
from tests.factories import ServiceFactory, UserFactory
from versions.models import CodeVersion

pytestmark = pytest.mark.django_db


def upload(api, service, content: bytes, name: str):
    archive = io.BytesIO(content)
    archive.name = name
    return api.post(f"/api/v1/services/{service.pk}/versions/", {"archive": archive}, format="multipart")


@pytest.mark.parametrize("runtime", ["php", "java", "static"])
def test_it_creates_a_service_of_each_runtime(api, runtime):
    response = api.post("/api/v1/services/", {"name": "site", "runtime": runtime}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["runtime"] == runtime and response.json()["java_heap_mb"] == 256
    assert Service.objects.get().runtime == runtime


def test_a_java_service_takes_its_heap_on_create(api):
    response = api.post("/api/v1/services/", {"name": "shop", "runtime": "java", "java_heap_mb": 512}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["java_heap_mb"] == 512 and Service.objects.get().java_heap_mb == 512


def test_it_changes_the_heap_of_a_java_service(api, alice):
    service = ServiceFactory(owner=alice, name="shop", runtime="java")
    response = api.patch(f"/api/v1/services/{service.pk}/", {"java_heap_mb": 768}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["java_heap_mb"] == 768 and response.json()["name"] == "shop"
    service.refresh_from_db()
    assert service.java_heap_mb == 768
    event = Event.objects.get(service=service, action="service.update")
    assert event.message == "java heap set to 768 MB (was 256 MB); instances started from now on have it"
    assert event.actor == alice


@pytest.mark.parametrize(
    ("runtime", "body", "field", "message"),
    [
        ("java", {"java_heap_mb": 32}, "java_heap_mb", "greater than or equal to 64"),
        ("java", {"java_heap_mb": 100000}, "java_heap_mb", "less than or equal to 16384"),
        ("java", {"java_heap_mb": "lots"}, "java_heap_mb", "A valid integer is required."),
        ("java", {"java_heap_mb": 512, "name": "other"}, "name", "cannot be changed"),
        ("java", {"runtime": "php"}, "runtime", "cannot be changed"),
        ("python", {"java_heap_mb": 512}, "java_heap_mb", "only java services run a JVM"),
    ],
)
def test_it_refuses_a_bad_change_and_changes_nothing(api, alice, runtime, body, field, message):
    service = ServiceFactory(owner=alice, name="shop", runtime=runtime)
    response = api.patch(f"/api/v1/services/{service.pk}/", body, format="json")
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    service.refresh_from_db()
    assert (service.name, service.runtime, service.java_heap_mb) == ("shop", runtime, 256)
    assert not Event.objects.filter(action="service.update").exists()


def test_a_change_that_names_nothing_is_refused(api, alice):
    service = ServiceFactory(owner=alice, name="shop", runtime="java")
    response = api.patch(f"/api/v1/services/{service.pk}/", {}, format="json")
    assert response.status_code == 400
    assert (
        response.json()["detail"]
        == "give one or more of: java_heap_mb, health_check_path, health_check_status, synchronous"
    )


def test_another_users_service_cannot_be_changed(api):
    service = ServiceFactory(owner=UserFactory(username="bob"), runtime="java")
    assert api.patch(f"/api/v1/services/{service.pk}/", {"java_heap_mb": 512}, format="json").status_code == 404
    assert client_for(service.owner).put(f"/api/v1/services/{service.pk}/", {}, format="json").status_code == 405
    service.refresh_from_db()
    assert service.java_heap_mb == 256


@pytest.mark.parametrize(
    ("runtime", "content", "name", "kind"),
    [
        ("php", php_label_app("a"), "site.zip", "zip"),
        ("java", java_label_war("a"), "ROOT.war", "war"),
        ("static", static_label_site("a"), "site.tar.gz", "tar.gz"),
    ],
)
def test_it_stores_an_archive_of_each_runtime(api, alice, runtime, content, name, kind):
    service = ServiceFactory(owner=alice, name="site", runtime=runtime)
    response = upload(api, service, content, name)
    assert response.status_code == 201, response.json()
    assert response.json()["kind"] == kind and response.json()["entry_point"] == ""


def test_a_php_archive_may_require_the_extensions_the_runtime_has(api, alice):
    service = ServiceFactory(owner=alice, name="wiki", runtime="php")
    composer = (
        '{"require": {"php": ">=8.1", "ext-pdo_pgsql": "*", "ext-mbstring": "*"}, "require-dev": {"ext-xdebug": "*"}}'
    )
    response = upload(api, service, zip_archive({"index.php": "<?php", "composer.json": composer}), "wiki.zip")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("runtime", "content", "name", "reason"),
    [
        ("php", zip_archive({"notes.txt": "hi", "style.css": ""}), "site.zip", "no .php or .html file"),
        ("php", zip_archive({"img/": b""}), "site.zip", "contains no files"),
        (
            "php",
            zip_archive(
                {"index.php": "<?php", "composer.json": '{"require": {"ext-pdo_pgsql": "*", "ext-mongodb": "*"}}'}
            ),
            "site.zip",
            "composer.json requires ext-mongodb, which the php runtime does not have",
        ),
        (
            "php",
            zip_archive({"index.php": "<?php", "composer.json": "{"}),
            "site.zip",
            "composer.json is not valid JSON",
        ),
        ("java", zip_archive({"index.jsp": "hi", "lib/WEB-INF/web.xml": ""}), "app.war", "not a .war"),
        ("java", tar_gz_archive({"WEB-INF/web.xml": ""}), "app.tar.gz", "needs a .war file"),
        ("java", b"not a zip at all", "app.war", "not a zip or tar.gz archive"),
        ("static", zip_archive({"css/": b"", "js/": b""}), "site.zip", "contains no files"),
        ("static", zip_archive({"index.html": "hi", "../escape.html": "x"}), "site.zip", "'..' path component"),
    ],
    ids=[
        "php-no-page",
        "php-no-file",
        "php-missing-extension",
        "php-bad-composer-json",
        "java-no-web-inf",
        "java-tar-gz",
        "java-not-zip",
        "static-empty",
        "static-escape",
    ],
)
def test_it_refuses_a_bad_archive_of_each_runtime_and_stores_nothing(
    api, alice, _isolated_archives, runtime, content, name, reason
):
    service = ServiceFactory(owner=alice, name="site", runtime=runtime)
    response = upload(api, service, content, name)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not CodeVersion.objects.exists()
    assert list(_isolated_archives.iterdir()) == []
    assert not Event.objects.filter(action="upload").exists()
