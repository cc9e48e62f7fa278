"""Builds (versions/builds.py) against the fake cloud's sandbox: made once per owner and inputs,
shipped to every node in the instance spec, reused, refused, and collected."""

import io
import tarfile

import pytest
from django.urls import resolve, reverse

from services.choices import OperationState, Outcome
from services.models import Event, Quota
from tests.apps import zip_archive
from tests.factories import NodeFactory, ServiceFactory
from versions.build_plans import requirements_refer_to_files
from versions.builds import build_from_token
from versions.models import Build, CodeVersion, Environment, Instance
from versions.storage import delete_version, store_version
from workflows.deploy import request_deploy

WSGI = "def application(environ, start_response):\n    return []\n"


def upload(service, label: str, files: dict) -> CodeVersion:
    return store_version(service, io.BytesIO(zip_archive(files)), label, service.owner, filename=f"{label}.zip")


def deploy(queue, service, version, environment="production"):
    target = Environment.objects.get(service=service, name=environment)
    return queue.start(lambda: request_deploy(target, version, service.owner))


def running_service(**kwargs):
    service = ServiceFactory(**kwargs)
    NodeFactory(service=service, is_proxy=True)
    NodeFactory(service=service)
    return service


def test_a_version_with_requirements_is_built_once_and_every_node_gets_the_build(queue, fleet, cloud):
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello==0.1\n"})

    operation = deploy(queue, service, version)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert len(cloud.builds) == 1
    argv, cwd = cloud.builds[0]
    assert argv[argv.index("--index-url") + 1] == "http://proxy/index/", "the proxy is the build's only index"
    assert "-r" in argv and "requirements.txt" in argv
    build = CodeVersion.objects.get(pk=version.pk).build
    assert build is not None and build.path.exists() and build.kind == "pip"
    with tarfile.open(build.path) as tar:
        assert tar.getnames() == ["hello.py"]
    specs = [instance.spec for instance in Instance.objects.filter(version=version)]
    assert len(specs) == 2 and all(spec["build_sha256"] == build.sha256 for spec in specs)
    assert build_from_token(resolve(specs[0]["build_url"]).kwargs["token"]) == build
    messages = list(
        Event.objects.filter(service=service, action="build").order_by("pk").values_list("message", flat=True)
    )
    assert messages[0] == "building v1: requirements.txt"
    assert messages[1].startswith("built v1 in ") and messages[1].endswith(": Successfully installed hello-0.1")


def test_the_same_requirements_reuse_the_owners_build_and_another_owner_builds_their_own(queue, cloud, bob):
    service = running_service()
    requirements = {"requirements.txt": "hello==0.1\n"}
    v1 = upload(service, "v1", {"wsgi.py": WSGI, **requirements})
    v2 = upload(service, "v2", {"wsgi.py": WSGI + "# changed\n", **requirements})
    deploy(queue, service, v1)

    assert deploy(queue, service, v2, "development").state == OperationState.SUCCEEDED

    assert len(cloud.builds) == 1
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.build == v2.build
    assert Event.objects.filter(service=service, message__startswith="v2 reuses the build").exists()
    # The same requirements of another user: never shared across owners.
    other = running_service(owner=bob, name="other")
    assert deploy(queue, other, upload(other, "v1", {"wsgi.py": WSGI, **requirements})).state == "succeeded"
    assert len(cloud.builds) == 2 and Build.objects.count() == 2


def test_a_version_without_requirements_builds_nothing(queue, cloud, fleet):
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI})

    assert deploy(queue, service, version).state == OperationState.SUCCEEDED

    assert cloud.__dict__.get("builds", []) == []
    version.refresh_from_db()
    assert version.needs_build is False and version.build is None
    assert all("build_url" not in instance.spec for instance in Instance.objects.filter(version=version))


@pytest.mark.parametrize(
    "requirement",
    ["./vendor/hello-0.1-py3-none-any.whl", "vendor/hello-0.1-py3-none-any.whl", "-r more.txt", "hello @ file:x"],
)
def test_requirements_naming_a_file_of_the_archive_build_per_archive(queue, cloud, requirement):
    service = running_service()
    local = {"requirements.txt": f"{requirement}\n", "vendor/hello-0.1-py3-none-any.whl": "x", "more.txt": ""}
    v1 = upload(service, "v1", {"wsgi.py": WSGI, **local})
    v2 = upload(service, "v2", {"wsgi.py": WSGI, **local, "vendor/hello-0.1-py3-none-any.whl": "y"})
    deploy(queue, service, v1)
    deploy(queue, service, v2, "development")

    assert len(cloud.builds) == 2, "the same requirements.txt, but other files in the archive"


def test_requirements_naming_only_projects_of_the_index_are_shared_by_versions():
    assert not requirements_refer_to_files("# pinned\nDjango>=5.2,<6\npsycopg[binary]==3.2 ; python_version>'3'\n\n")
    assert requirements_refer_to_files("--index-url http://elsewhere/simple\ndjango\n")
    assert requirements_refer_to_files("hello @ https://example.org/hello-1.0.whl\n")


def test_a_php_site_with_composer_json_and_no_vendor_gets_a_composer_build(queue, cloud, fleet):
    service = running_service(runtime="php")
    site = {"index.php": "<?php require 'vendor/autoload.php';", "composer.json": '{"require": {}}'}
    version = upload(service, "v1", site)

    assert deploy(queue, service, version).state == OperationState.SUCCEEDED

    argv, _ = cloud.builds[0]
    assert argv[:2] == ["composer", "install"] and "--no-dev" in argv
    build = CodeVersion.objects.get(pk=version.pk).build
    with tarfile.open(build.path) as tar:
        assert tar.getnames() == ["autoload.php"]
    # A site that ships its vendor/ is not built again.
    shipped = upload(service, "v2", {**site, "vendor/autoload.php": "<?php\n"})
    assert deploy(queue, service, shipped, "development").state == OperationState.SUCCEEDED
    assert len(cloud.builds) == 1


def test_a_failed_build_fails_the_deploy_with_the_installers_last_lines_and_keeps_nothing(queue, cloud, fleet):
    service = running_service()
    cloud.build_exit = 1
    cloud.build_lines = ["Collecting nothere", "ERROR: No matching distribution found for nothere"]
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "nothere\n"})

    operation = deploy(queue, service, version)

    assert operation.state == OperationState.FAILED
    assert "the build of v1 failed (requirements.txt; exit 1); nothing was switched" in operation.error
    assert operation.error.endswith("ERROR: No matching distribution found for nothere")
    assert Environment.objects.get(service=service, name="production").version is None
    assert not Build.objects.exists() and not fleet.calls_to("put_instance")
    failed = Event.objects.get(service=service, action="build", outcome=Outcome.FAILED)
    assert "No matching distribution found for nothere" in failed.message
    # Fixed (the index has it now): the next deploy builds.
    cloud.build_exit = 0
    assert deploy(queue, service, version).state == OperationState.SUCCEEDED


def test_a_build_over_the_storage_quota_is_not_kept(queue, cloud, settings):
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})
    Quota.objects.create(user=service.owner, storage_mb=0)

    operation = deploy(queue, service, version)

    assert operation.state == OperationState.FAILED
    assert "the build of v1 is not kept: quota exceeded: storage_mb (0)" in operation.error
    assert not Build.objects.exists() and list(settings.CONPAAS_BUILDS.glob("*.tar.gz")) == []


def test_no_package_proxy_is_a_clear_failure(queue, settings):
    settings.CONPAAS_PACKAGE_PROXY_URL = ""
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})

    operation = deploy(queue, service, version)

    assert operation.state == OperationState.FAILED
    assert "no package proxy runs" in operation.error


def test_a_build_no_version_uses_goes_with_the_last_version(queue, settings):
    service = running_service()
    v1 = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})
    deploy(queue, service, v1, "development")
    build = CodeVersion.objects.get(pk=v1.pk).build
    v2 = upload(service, "v2", {"wsgi.py": WSGI})
    deploy(queue, service, v2, "development")

    delete_version(CodeVersion.objects.get(pk=v1.pk), service.owner)

    assert not Build.objects.filter(pk=build.pk).exists()
    assert not build.path.exists()


def test_the_api_shows_a_versions_build(queue, client):
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})
    client.force_login(service.owner)
    before = client.get(f"/api/v1/services/{service.pk}/versions/").json()[0]
    assert before["build"] is None and before["needs_build"] is None
    deploy(queue, service, version)

    shown = client.get(f"/api/v1/services/{service.pk}/versions/").json()[0]

    build = Build.objects.get()
    assert shown["needs_build"] is True
    assert shown["build"] == {
        "kind": "pip",
        "sha256": build.sha256,
        "size": build.size,
        "seconds": build.seconds,
        "summary": "Successfully installed hello-0.1",
        "created": shown["build"]["created"],
    }


def test_nodes_download_a_build_by_its_signed_link_only(queue, client):
    service = running_service()
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})
    deploy(queue, service, version)
    spec = Instance.objects.filter(version=version).first().spec

    response = client.get(spec["build_url"])

    build = Build.objects.get()
    assert response.status_code == 200 and b"".join(response.streaming_content) == build.path.read_bytes()
    assert client.get(spec["build_url"].replace("/builds/", "/builds/x")).status_code == 404
    assert client.get(spec["archive_url"]).status_code == 200
    token = spec["build_url"].rstrip("/").rsplit("/", 1)[1]
    assert client.get(reverse("version-archive", args=[token])).status_code == 404, "a build's link is no archive's"


def test_a_build_keeps_folders_and_files_only_and_says_what_it_left_out(queue, cloud, settings):
    """The packing step runs as the build's user: a link to a file of the platform's is never
    followed, so nothing but what the build itself could read is ever stored."""
    service = running_service()

    def links(site):
        (site / "secret").symlink_to(settings.CONPAAS_HOME / "secret_key")
        (site / "pkg").mkdir()
        (site / "pkg" / "bin").symlink_to("/etc")
        (site / "pkg" / "mod.py").write_text("x = 1\n")

    cloud.build_extra = links
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": "hello\n"})

    assert deploy(queue, service, version).state == OperationState.SUCCEEDED

    build = Build.objects.get()
    with tarfile.open(build.path) as tar:
        assert sorted(tar.getnames()) == ["hello.py", "pkg", "pkg/mod.py"]
    log = (settings.CONPAAS_BUILDS / f"{build.key}.log").read_text()
    assert "left out secret: a symbolic link" in log and "left out pkg/bin: a symbolic link" in log


def test_requirements_over_a_megabyte_are_refused_with_the_reason(queue, cloud):
    service = running_service()
    noise = "".join(f"# {n:x}\n" for n in range(200_000))  # not too compressible for the upload's rules
    version = upload(service, "v1", {"wsgi.py": WSGI, "requirements.txt": noise})

    operation = deploy(queue, service, version)

    assert operation.state == OperationState.FAILED
    assert operation.error == "v1 cannot be built: requirements.txt is larger than 1024 KB"
    assert Event.objects.filter(service=service, action="build", outcome=Outcome.FAILED).exists()
    assert cloud.__dict__.get("builds", []) == []
