"""`conpaas versions`, `deploy`, `preview` and `swap`: the blue-green workflow from the command line,
against `server` (the fake fleet's routers say what a request would reach)."""

import pytest

from tests.apps import label_app

CRASH = 'Traceback (most recent call last):\n  File "wsgi.py", line 1\nRuntimeError: this app cannot start'


@pytest.fixture
def service(alice):
    return alice.create_service("cli-blog")


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archives")
    for build in ("1", "2", "3"):
        (folder / f"v{build}.zip").write_bytes(label_app(build))
    (folder / "broken.zip").write_bytes(b"this is not a zip archive")
    return folder


@pytest.fixture
def uploaded(alice, service, archives):
    """cli-blog with v1 and v2 uploaded."""
    for label in ("v1", "v2"):
        assert alice.upload(service["id"], (archives / f"{label}.zip").read_bytes(), label).status_code == 201
    return service


@pytest.fixture
def deployed(alice, uploaded):
    """cli-blog with v1 in production and v2 in development."""
    versions = {v["label"]: v["id"] for v in alice.get(f"/api/v1/services/{uploaded['id']}/versions/").json()}
    for environment, label in (("production", "v1"), ("development", "v2")):
        assert alice.deploy(uploaded["id"], environment, versions[label])["state"] == "succeeded"
    return uploaded


def environments(api, service) -> dict:
    return {e["name"]: e for e in api.get(f"/api/v1/services/{service['id']}/environments/").json()}


def test_it_uploads_and_lists_code_versions(cli, logged_in, service, archives):
    first = cli("versions", "upload", "cli-blog", archives / "v1.zip", "--label", "v1")
    assert first.code == 0, first.err
    assert first.out.startswith("uploaded v1 to cli-blog (id ")

    second = cli("versions", "upload", "cli-blog", archives / "v2.zip", "-l", "v2", "--json")
    assert second.code == 0, second.err
    assert second.json()["label"] == "v2" and len(second.json()["sha256"]) == 64

    listed = cli("versions", "list", "cli-blog")
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["ID", "LABEL", "KIND", "SIZE", "SHA256", "CREATED", "ENVIRONMENTS"]
    assert sorted(row.split()[1] for row in rows) == ["v1", "v2"]


def test_it_shows_why_the_server_refuses_an_archive(cli, logged_in, service, archives):
    result = cli("versions", "upload", "cli-blog", archives / "broken.zip", "--label", "broken")

    assert result.code == 1
    assert result.err.startswith("error: ") and len(result.err.splitlines()) == 1
    reason = logged_in.upload(service["id"], b"this is not a zip archive", "broken", "broken.zip").json()["detail"]
    assert result.err == f"error: {reason}\n"
    assert "broken" not in [v["label"] for v in logged_in.get(f"/api/v1/services/{service['id']}/versions/").json()]

    missing = cli("versions", "upload", "cli-blog", archives / "missing.zip")
    assert missing.code == 1
    assert missing.err == f"error: cannot read {archives / 'missing.zip'}: No such file or directory\n"


def test_it_deploys_and_waits_showing_progress(cli, logged_in, uploaded):
    production = cli("deploy", "cli-blog", "production", "v1")
    assert production.code == 0, production.err
    assert "✓ deploy succeeded" in production.out
    assert "production of cli-blog now serves v1" in production.out
    progress = production.err.splitlines()
    assert progress and all(line.startswith("deploy #") for line in progress), production.err
    # That the steps of a real deploy (seconds long) show is test_real_platform.py's to see.

    development = cli("deploy", "cli-blog", "development", "v2")
    assert development.code == 0, development.err
    assert "preview: http://" in development.out
    assert environments(logged_in, uploaded)["development"]["version_label"] == "v2"


def test_it_refuses_unknown_versions_and_environments(cli, logged_in, uploaded):
    unknown_version = cli("deploy", "cli-blog", "production", "v9")
    assert unknown_version.code == 1
    assert unknown_version.err.startswith("error: cli-blog has no version 'v9' (it has: ")
    assert "v1" in unknown_version.err and "v2" in unknown_version.err

    unknown_environment = cli("deploy", "cli-blog", "staging", "v1")
    assert unknown_environment.code == 1
    assert (
        unknown_environment.err
        == "error: cli-blog has no environment named 'staging' (it has: production, development)\n"
    )

    assert cli("versions", "delete", "cli-blog", "v9").err == unknown_version.err
    # The preview and the swap (which the API refuses) say it in the same words.
    assert cli("preview", "cli-blog", "staging").err == unknown_environment.err
    assert cli("swap", "cli-blog", "staging").err == unknown_environment.err


def test_it_prints_a_preview_url_that_serves_the_development_version(cli, logged_in, server, deployed):
    result = cli("preview", "cli-blog")

    assert result.code == 0, result.err
    url = result.out.strip()
    development = environments(logged_in, deployed)["development"]
    assert url == development["preview_url"]
    assert server.served(deployed, development["preview_key"]) == "v2"
    assert cli("preview", "cli-blog", "production").out.strip() == deployed["url"]


def test_it_swaps_and_swaps_back(cli, logged_in, server, deployed):
    service = deployed
    versions = {v["label"]: v["id"] for v in logged_in.get(f"/api/v1/services/{service['id']}/versions/").json()}

    swapped = cli("swap", "cli-blog")
    assert swapped.code == 0, swapped.err
    assert swapped.out.splitlines() == [
        f"production now serves v2 (id {versions['v2']})",
        f"development now serves v1 (id {versions['v1']})",
        "swap back: conpaas swap cli-blog development",
    ]
    assert server.served(service) == "v2"

    back = cli("swap", "cli-blog", "development", "--json")
    assert back.code == 0, back.err
    assert back.json() == {"production": versions["v1"], "development": versions["v2"]}
    assert server.served(service) == "v1"


def test_it_refuses_to_delete_a_version_in_use_and_deletes_an_unused_one(cli, logged_in, deployed, archives):
    in_use = cli("versions", "delete", "cli-blog", "v1")
    assert in_use.code == 1
    assert in_use.err == "error: v1 is in use by production; deploy another version there first\n"

    assert cli("versions", "upload", "cli-blog", archives / "v3.zip", "-l", "v3").code == 0
    listed = cli("versions", "list", "cli-blog").out
    assert "production" in listed and "development" in listed

    deleted = cli("versions", "delete", "cli-blog", "v3")
    assert deleted.code == 0, deleted.err
    assert deleted.out.startswith("deleted version v3 (id ")
    assert "v3" not in [v["label"] for v in cli("versions", "list", "cli-blog", "--json").json()]


def test_it_exits_1_when_the_operation_fails(cli, logged_in, server, deployed, archives):
    service = deployed
    server.fleet.crashing["crashing"] = CRASH  # what the app prints as it exits at its start
    assert cli("versions", "upload", "cli-blog", archives / "v3.zip", "-l", "crashing").code == 0

    result = cli("deploy", "cli-blog", "development", "crashing")

    assert result.code == 1
    assert result.out == ""
    verdict = next(line for line in result.err.splitlines() if not line.startswith("deploy #"))
    assert verdict.startswith("✗ deploy failed: crashing could not start"), result.err
    assert "this app cannot start" in result.err, "the app's own error is shown below the verdict"
    assert environments(logged_in, service)["development"]["version_label"] == "v2", "nothing changed"
