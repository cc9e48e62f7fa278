"""The seed's demo, end to end: Wikipedia's software in front of a database loaded from a dump.

MediaWiki from Debian's `mediawiki` package, unchanged but for a LocalSettings.php that reads
DATABASE_URL (examples/mediawiki: this test packs it with that example's build.py, one
implementation), on a php service linked to a postgresql service loaded from a dump MediaWiki's own
installer made, brought up by the example's manifest; a page of the dump reads; v2 (another name
and skin) is previewed, swapped in and the wiki scaled out to 2 backend nodes under load with no failed
request; an edit saved through MediaWiki's API then reads back on every node. The figures (how long
each step took, from an empty platform) are printed, not asserted."""

import contextlib
import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.load import OpenLoop

# Minutes of a real application; the Redis pass's broker changes nothing it exercises.
pytestmark = [pytest.mark.integration, pytest.mark.one_pass]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mediawiki"
spec = importlib.util.spec_from_file_location("mediawiki_build", EXAMPLE / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

POSTGRES = os.environ.get("CONPAAS_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432").rstrip("/")
EDIT = "Saved through MediaWiki's API, behind ConPaaS's router."
# The demo page's <title> under each version's $wgSitename.
V1, V2 = "Demo page - ConPaaS wiki", "Demo page - ConPaaS wiki v2"


@pytest.fixture(scope="module")
def wiki_files(tmp_path_factory):
    """wiki.sql (from MediaWiki's installer, in a scratch database of the test server, named by the
    run so that ./run drops it after an interrupted run), wiki-v1.zip and wiki-v2.zip."""
    assert build.MEDIAWIKI.is_dir(), "mediawiki is not installed: ./run setup installs it"
    out = tmp_path_factory.mktemp("mediawiki")
    began = time.monotonic()
    prefix = f"{os.environ.get('CONPAAS_QUEUE_NAME', 'conpaas')}_mediawiki"
    files = {"./wiki.sql": build.installer_dump(out / "wiki.sql", POSTGRES, scratch_prefix=prefix)}
    files.update({f"./wiki-{version}.zip": path for version, path in build.pack(out).items()})
    files["took"] = time.monotonic() - began
    return files


@pytest.fixture
def api(control_plane):
    return control_plane.client("wikipedia")


def page(url: str, **params) -> requests.Response:
    return requests.get(f"{url}index.php", params={"title": build.DEMO_PAGE, **params}, timeout=30)


def title_of(html: str) -> str:
    return html.split("<title>", 1)[1].split("</title>", 1)[0]


def save_through_the_api(url: str, text: str) -> dict:
    """An anonymous edit, as MediaWiki's API takes it: a CSRF token (an anonymous user's is `+\\`),
    then action=edit."""
    tokens = requests.get(f"{url}api.php", params={"action": "query", "meta": "tokens", "format": "json"}, timeout=30)
    token = tokens.json()["query"]["tokens"]["csrftoken"]
    edit = {"action": "edit", "format": "json", "title": build.DEMO_PAGE, "appendtext": f"\n\n{text}"}
    saved = requests.post(f"{url}api.php", data={**edit, "summary": "from the test", "token": token}, timeout=60)
    assert saved.status_code == 200, saved.text[:2000]
    return saved.json()


def test_mediawiki_from_a_dump_previews_swaps_and_scales_out_under_load(api, control_plane, wiki_files):
    took = {"the installer's dump and MediaWiki packed (v1, v2)": wiki_files["took"]}
    began = time.monotonic()
    manifest = (EXAMPLE / "manifest.yaml").read_text()
    parts = {path: (Path(file).name, Path(file).read_bytes()) for path, file in wiki_files.items() if path != "took"}
    applied = api.post(
        "/api/v1/applications/apply/",
        data={"manifest": manifest},
        files={path: parts[path] for path in ("./wiki.sql", "./wiki-v1.zip")},
        timeout=300,
    )
    assert applied.status_code == 202, applied.text
    try:
        for operation in applied.json()["operations"]:
            done = api.wait_operation(operation, timeout=300)
            assert done["state"] == "succeeded", (done["kind"], done["error"])
        took["apply: database loaded, wiki v1 serving"] = time.monotonic() - began
        services = {s["name"]: s for s in api.get("/api/v1/services/").json()}
        wiki = services["wiki"]
        url, sid = wiki["url"], wiki["id"]

        # A page of the dump reads, under v1's name.
        shown = page(url)
        assert shown.status_code == 200, shown.text[:2000]
        assert build.DEMO_TEXT in shown.text and title_of(shown.text) == V1

        # v2 into development, previewed.
        step = time.monotonic()
        uploaded = api.upload(sid, parts["./wiki-v2.zip"][1], "v2", filename="wiki-v2.zip")
        assert uploaded.status_code == 201, uploaded.text
        v2 = uploaded.json()
        deployed = api.deploy(sid, "development", v2["id"], timeout=300)
        assert deployed["state"] == "succeeded", deployed["error"]
        took["v2 uploaded and deployed in development"] = time.monotonic() - step
        environments = {e["name"]: e for e in api.get(f"/api/v1/services/{sid}/environments/").json()}
        key = environments["development"]["preview_key"]
        preview = page(url, **{"conpaas-env": key})
        assert preview.headers.get("X-Conpaas-Env") == "development"
        assert title_of(preview.text) == V2 and build.DEMO_TEXT in preview.text
        assert title_of(page(url).text) == V1  # production still serves v1

        # Swapped in and scaled out while readers keep reading: one more node proves it (each node
        # takes ~20 s here: MediaWiki's 61 MB, for each of the two environments).
        load = OpenLoop(f"{url}index.php?title={build.DEMO_PAGE}", rate=4, timeout=30).start()
        try:
            wait_for_answers(load, 4)
            step = time.monotonic()
            swapped = api.post(f"/api/v1/services/{sid}/swap/", json={"environment": "development"})
            assert swapped.status_code == 200, swapped.text
            assert swapped.json()["production"] == v2["id"]
            took["swap"] = time.monotonic() - step
            assert title_of(page(url).text) == V2
            step = time.monotonic()
            scaled = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": 2})
            assert scaled.status_code == 202, scaled.text
            done = api.wait_operation(scaled.json(), timeout=300)
            assert done["state"] == "succeeded", done["error"]
            took["scale 1 -> 2 backend nodes"] = time.monotonic() - step
            wait_for_answers(load, 12)  # the new node takes its share
        finally:
            answers = load.stop()
        failed = [a for a in answers if a.status != 200 or build.DEMO_TEXT.encode() not in a.body]
        assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
        assert {title_of(a.body.decode()) for a in answers} == {V1, V2}, "the readers saw the swap"

        # An edit through the API (any node takes it) reads back on each node, asked directly.
        saved = save_through_the_api(url, EDIT)
        assert saved["edit"]["result"] == "Success", saved
        backends = [n for n in api.get(f"/api/v1/services/{sid}/nodes/").json() if "backend" in n["roles"]]
        assert len(backends) == 2 and all(n["state"] == "running" for n in backends), backends
        for node in backends:
            state = json.loads((control_plane.home / "nodes" / node["name"] / "state.json").read_text())
            port = state["instances"][f"{node['name']}-v{v2['id']}"]["port"]
            direct = page(f"http://{node['address']}:{port}/")
            assert direct.status_code == 200, (node["name"], direct.text[:2000])
            assert EDIT in direct.text and title_of(direct.text) == V2, node["name"]
        took["from an empty platform to all of it"] = time.monotonic() - began
    except BaseException:
        with contextlib.suppress(Exception):  # the test's own failure is the one to see
            print_logs(api)
        raise
    finally:
        application = next(a for a in api.get("/api/v1/applications/").json() if a["name"] == "mediawiki")
        for operation in api.delete(f"/api/v1/applications/{application['id']}/").json():
            api.wait_operation(operation, timeout=180)
    print(
        f"\nMediaWiki: {len(answers)} reads at {load.rate}/s through the swap and the scaling, none failed, "
        f"slowest {max(a.seconds for a in answers):.1f} s; "
        + "; ".join(f"{what} {seconds:.1f} s" for what, seconds in took.items())
    )


def wait_for_answers(load: OpenLoop, count: int) -> None:
    """Wait while `count` more of the load's requests are answered."""
    since = time.monotonic()
    wait_until(lambda: len(load.snapshot(since)) >= count, timeout=60, message="the load to be answered")


def print_logs(api) -> None:
    """What the wiki's instances logged (php-fpm's log has MediaWiki's exceptions): the nodes are
    gone after the test."""
    for service in api.get("/api/v1/services/").json():
        if service["name"] == "wiki":
            for environment in ("production", "development"):
                logs = api.get(f"/api/v1/services/{service['id']}/logs/?environment={environment}&lines=40").json()
                for line in logs.get("lines", []):
                    if line["file"] != "access.log":
                        print(f"{environment} {line['instance']} {line['file']}: {line['line']}")
