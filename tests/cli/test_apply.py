"""`conpaas apply` against a live control plane (`server`): the plan, refusals with the path of the
wrong field, then the example manifest (a web front linking an api, API_URL) applied, and applied
again as a no-op. That the example serves on real nodes is test_real_platform.py's to show."""

import shutil
from pathlib import Path

import pytest

from tests.cli.conftest import log_in

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "manifest"


@pytest.fixture
def as_owner(server, config_file):
    """The CLI logged in as a user of its own (the example's service names are the user's)."""
    return log_in(server.client("manifest-owner"), "manifest-owner")


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
        "settings, release, health, java_heap_mb, synchronous, dump, backups)",
        "  services.web.port: unknown key (expected one of: runtime, nodes, links, versions, environments, "
        "settings, release, health, java_heap_mb, synchronous, dump, backups)",
        "  services.web.nodes: must be ≥ 1",
    ]
    assert as_owner.get("/api/v1/applications/").json() == []


def test_a_missing_file_is_named(cli, as_owner, example):
    shutil.rmtree(example.parent / "api")

    result = cli("apply", example)

    assert result.code != 0
    assert "./api does not exist (paths are relative to the manifest)" in result.err


def test_it_applies_the_example_then_applying_again_changes_nothing(cli, server, as_owner, example):
    # What examples/manifest/api/release.py prints on a real node.
    server.fleet.releases["v1"] = (0, "release of v1 for production: nothing to migrate")

    result = cli("apply", example)

    assert result.code == 0, result.err
    assert "greetings is as its manifest says" in result.out
    services = {s["name"]: s for s in as_owner.get("/api/v1/services/").json()}
    assert server.served(services["web"]) == server.served(services["api"]) == "v1"
    (front,) = server.reached(services["web"])
    assert front["env"]["API_URL"].startswith("http://"), "the front finds the api in API_URL"
    # The api's release command ran once, before v1 served, its output in the events.
    events = as_owner.get(f"/api/v1/services/{services['api']['id']}/events/").json()
    releases = [e for e in events if e["action"] == "release"]
    assert len(releases) == 1 and releases[0]["outcome"] == "succeeded", releases
    assert "release of v1 for production: nothing to migrate" in releases[0]["message"]

    again = cli("apply", example)

    assert again.code == 0, again.err
    assert again.out.strip() == "greetings: nothing to change"
