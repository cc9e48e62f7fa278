"""`conpaas apply` against a live control plane: the plan, refusals with the path of the wrong
field, then the example manifest (a web front linking an api, API_URL) applied, served, and
applied again as a no-op."""

import shutil
from pathlib import Path

import pytest
import requests

from conpaas_cli import config
from conpaas_common.waiting import wait_until

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "manifest"


@pytest.fixture(scope="module")
def owner(control_plane):
    """A user of its own: the example's service names are taken by nobody else's test."""
    return control_plane.client("manifest-owner")


@pytest.fixture
def as_owner(control_plane, owner, config_file):
    token = owner.session.headers["Authorization"].removeprefix("Token ")
    config.save({"url": control_plane.url, "token": token, "username": "manifest-owner"})
    return owner


@pytest.fixture
def example(tmp_path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path / "manifest")
    return tmp_path / "manifest" / "manifest.yaml"


def test_a_dry_run_prints_the_plan_and_creates_nothing(cli, as_owner, example):
    result = cli("apply", example, "--dry-run")

    assert result.code == 0, result.err
    assert "+ application greetings" in result.out
    assert "+ service api (python)" in result.out and "~ web: link api" in result.out
    assert "(dry run: nothing changed)" in result.out
    assert as_owner.get("/api/v1/applications/").json() == []


def test_a_bad_manifest_is_refused_with_the_path_of_the_wrong_field_one_a_line(cli, as_owner, example):
    text = example.read_text().replace("nodes: 1 ", "nodes: 0 ")
    example.write_text(text.replace("runtime: python", "runtime: python\n    port: 80"))

    result = cli("apply", example)

    assert result.code != 0
    assert result.err.splitlines() == [
        "error: the manifest is refused:",
        "  services.api.port: unknown key (expected one of: runtime, nodes, links, versions, environments, "
        "settings, release, health, java_heap_mb, dump)",
        "  services.web.port: unknown key (expected one of: runtime, nodes, links, versions, environments, "
        "settings, release, health, java_heap_mb, dump)",
        "  services.web.nodes: must be ≥ 1",
    ]
    assert as_owner.get("/api/v1/applications/").json() == []


def test_a_missing_file_is_named(cli, as_owner, example):
    shutil.rmtree(example.parent / "api")

    result = cli("apply", example)

    assert result.code != 0
    assert "./api does not exist (paths are relative to the manifest)" in result.err


def test_it_applies_the_example_which_serves_then_applying_again_changes_nothing(cli, as_owner, example):
    try:
        result = cli("apply", example)

        assert result.code == 0, result.err
        assert "greetings is as its manifest says" in result.out
        services = {s["name"]: s for s in as_owner.get("/api/v1/services/").json()}
        api_url = services["api"]["url"]
        # The front asked the api through API_URL, the api's router as other nodes reach it.
        page = wait_until(
            lambda: (text := requests.get(services["web"]["url"], timeout=10).text).startswith("hello") and text,
            timeout=60,
            message="the front to show the api's greeting",
        )
        assert page.startswith("hello from the api at http://"), page
        assert requests.get(api_url, timeout=10).json()["greeting"] == "hello"
        # The api's release command ran once, before v1 served, its output in the events.
        events = as_owner.get(f"/api/v1/services/{services['api']['id']}/events/").json()
        releases = [e for e in events if e["action"] == "release"]
        assert len(releases) == 1 and releases[0]["outcome"] == "succeeded", releases
        assert "release of v1 for production: nothing to migrate" in releases[0]["message"]

        again = cli("apply", example)

        assert again.code == 0, again.err
        assert again.out.strip() == "greetings: nothing to change"
    finally:
        for application in as_owner.get("/api/v1/applications/").json():
            for operation in as_owner.delete(f"/api/v1/applications/{application['id']}/").json():
                as_owner.wait_operation(operation)
