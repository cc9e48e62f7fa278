"""`conpaas services`, `nodes`, `scale`, `wait` and `events` against a live control plane (`server`:
its nodes are the fake fleet's)."""

import io
import json
import threading

import pytest

from tests.apps import label_app


@pytest.fixture
def service(alice):
    """A running service, created through the API (the CLI's create is tested on its own)."""
    return alice.create_service("cli-shop")


def test_it_creates_waits_for_and_deletes_a_service(cli, logged_in):
    created = cli("services", "create", "cli-tmp")

    assert created.code == 0, created.err
    assert "✓ create succeeded" in created.out
    assert "cli-tmp (id " in created.out and " is running at http://" in created.out
    assert "create #" in created.err, "the progress of the operation is shown on stderr"

    duplicate = cli("services", "create", "cli-tmp")
    assert duplicate.code == 1
    assert duplicate.err == "error: name: you already have a service named cli-tmp\n"

    as_json = cli("services", "create", "cli-tmp-2", "--json")
    assert as_json.code == 0, as_json.err
    assert as_json.json()["state"] == "running" and as_json.json()["url"].startswith("http://")
    assert cli("services", "delete", "cli-tmp-2", "--yes", "--no-wait").code == 0

    deleted = cli("services", "delete", "cli-tmp", "--yes")
    assert deleted.code == 0, deleted.err
    assert "✓ delete succeeded" in deleted.out
    assert all(s["name"] != "cli-tmp" for s in logged_in.get("/api/v1/services/").json())


class Terminal(io.StringIO):
    """What the user types at a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_delete_asks_for_the_name_on_a_terminal(cli, logged_in, monkeypatch):
    created = logged_in.create_service("cli-typed")

    monkeypatch.setattr("sys.stdin", Terminal("cli-typd\n"))
    mistyped = cli("services", "delete", "cli-typed")
    assert mistyped.code == 1
    assert "This deletes cli-typed: its nodes, code versions and history. Type its name to confirm: " in mistyped.err
    assert mistyped.err.endswith("error: not deleted: 'cli-typd' is not 'cli-typed'\n")
    assert logged_in.get(f"/api/v1/services/{created['id']}/").json()["state"] == "running"

    monkeypatch.setattr("sys.stdin", Terminal("cli-typed\n"))
    typed = cli("services", "delete", "cli-typed")
    assert typed.code == 0, typed.err
    assert "✓ delete succeeded" in typed.out


def test_a_delete_without_a_terminal_needs_yes(cli, logged_in, service):
    result = cli("services", "delete", "cli-shop")

    assert result.code == 2
    assert result.err == "error: not deleted: confirm by typing cli-shop on a terminal, or give --yes\n"
    assert logged_in.get(f"/api/v1/services/{service['id']}/").json()["state"] == "running"


def test_a_linked_service_is_deleted_only_with_force(cli, logged_in, tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "application: cli-linked\n"
        "services:\n"
        "  cli-linkdb: {runtime: python}\n"
        "  cli-linker: {runtime: python, links: [cli-linkdb]}\n"
    )
    assert cli("apply", manifest).code == 0

    refused = cli("services", "delete", "cli-linkdb", "--yes")
    assert refused.code == 1
    assert refused.err == (
        "error: cli-linkdb is linked by cli-linker: delete them or unlink it from their manifest first, "
        "or force the delete (--force)\n"
    )
    services = {s["name"]: s for s in logged_in.get("/api/v1/services/").json()}
    assert services["cli-linkdb"]["state"] == "running"

    forced = cli("services", "delete", "cli-linkdb", "--yes", "--force")
    assert forced.code == 0, forced.err
    assert "cli-linkdb" not in {s["name"] for s in logged_in.get("/api/v1/services/").json()}


def test_it_refuses_an_unknown_runtime(cli, logged_in):
    result = cli("services", "create", "cli-cobol", "--runtime", "cobol")

    assert result.code == 1
    assert result.err.startswith('error: runtime: "cobol" is not a valid choice')


def test_it_lists_services_in_a_table_and_as_json(cli, logged_in, service):
    table = cli("services", "list")
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == ["ID", "NAME", "RUNTIME", "STATE", "URL", "PRODUCTION"]
    row = next(line.split() for line in rows if line.split()[1] == "cli-shop")
    assert row == [str(service["id"]), "cli-shop", "python", "running", service["url"], "-"]

    as_json = cli("services", "list", "--json")
    assert as_json.code == 0
    assert service["id"] in [s["id"] for s in as_json.json()]


def test_it_shows_a_service_by_name_or_id(cli, logged_in, service):
    by_name = cli("services", "show", "cli-shop")
    assert by_name.code == 0, by_name.err
    assert "name:    cli-shop" in by_name.out
    assert f"url:     {service['url']}" in by_name.out
    assert "production" in by_name.out and "development" in by_name.out

    by_id = cli("--json", "services", "show", str(service["id"]))
    assert by_id.code == 0
    assert by_id.json()["name"] == "cli-shop"


def test_it_exits_1_for_an_unknown_service_naming_the_close_ones(cli, logged_in, service):
    for argv in (("services", "show", "cli-shp"), ("nodes", "cli-shp"), ("events", "cli-shp"), ("preview", "cli-shp")):
        result = cli(*argv)
        assert result.code == 1
        assert result.err.startswith("error: no service named 'cli-shp' (you have: ") and "cli-shop" in result.err
        assert "; did you mean 'cli-shop'" in result.err and len(result.err.splitlines()) == 1


def test_it_lists_nodes(cli, logged_in, service):
    result = cli("nodes", "cli-shop")

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split()[:4] == ["NAME", "ROLE", "STATE", "ADDRESS"]
    assert len(rows) == 1 and "proxy+backend" in rows[0] and "running" in rows[0]
    assert cli("nodes", "cli-shop", "--json").json()[0]["state"] == "running"


def test_it_scales_and_waits(cli, logged_in, service):
    result = cli("scale", "cli-shop", "backend", "1")

    assert result.code == 0, result.err
    assert "✓ scale succeeded" in result.out
    assert "cli-shop has 1 backend node(s)" in result.out


def test_it_starts_a_scale_without_waiting_and_waits_later(cli, logged_in, service):
    started = cli("scale", "cli-shop", "backend", "1", "--no-wait")

    assert started.code == 0, started.err
    operation_id = int(started.out)
    assert f"conpaas wait {operation_id}" in started.err

    waited = cli("wait", str(operation_id), "--json")
    assert waited.code == 0, waited.err
    assert waited.json()["state"] == "succeeded" and waited.json()["kind"] == "scale"

    assert cli("wait", "999999").err == "error: no operation 999999\n"


def test_it_shows_refusals_of_the_api_in_one_line(cli, logged_in, service):
    result = cli("scale", "cli-shop", "proxy", "2")

    assert result.code == 1
    assert result.err == "error: nodes: a service runs exactly one proxy node in this release\n"


def test_it_prints_events_oldest_first(cli, logged_in, service):
    assert cli("scale", "cli-shop", "backend", "1").code == 0
    result = cli("events", "cli-shop")

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "created python service cli-shop" in lines[0]
    assert any("scale" in line for line in lines[1:])

    newest = cli("events", "cli-shop", "--json", "--limit", "1").json()
    assert len(newest) == 1 and newest[0]["id"] == max(e["id"] for e in cli("events", "cli-shop", "--json").json())


def test_it_follows_new_events_for_a_bounded_time(cli, logged_in, service):
    before = logged_in.get(f"/api/v1/services/{service['id']}/events/").json()[0]["id"]
    # A code version uploaded while the CLI follows: its event must show up in the output.
    upload = threading.Timer(0.3, lambda: logged_in.upload(service["id"], label_app("follow"), "followed"))
    upload.start()
    try:
        result = cli("events", "cli-shop", "--follow", "--follow-seconds", "1.5", "--json")
    finally:
        upload.join()

    assert result.code == 0, result.err
    followed = [json.loads(line) for line in result.out.splitlines()]
    ids = [event["id"] for event in followed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "each event once, oldest first"
    new = [event for event in followed if event["id"] > before]
    uploads = [event["message"] for event in new if event["action"] == "upload"]
    assert len(uploads) == 1 and uploads[0].startswith("uploaded followed "), result.out


def test_it_follows_in_human_form(cli, logged_in, service):
    result = cli("events", "cli-shop", "-f", "--follow-seconds", "0.2", "--limit", "2")

    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 2
    assert cli("events", "cli-shop", "--follow-seconds", "1").code == 2


def test_it_lists_a_replicated_services_members_with_their_role_and_lag(cli, logged_in, alice):
    cache = alice.create_service("cli-cache", "redis")
    scaled = alice.post(f"/api/v1/services/{cache['id']}/scale/", json={"role": "backend", "nodes": 2}).json()
    assert alice.wait_operation(scaled)["state"] == "succeeded"

    result = cli("nodes", "cli-cache")

    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split()[-2:] == ["REPLICATION", "LAG"]
    assert sorted(row.split()[-3:] for row in rows if "backend" in row) == [
        ["primary", "0", "s"],
        ["replica", "0", "s"],
    ]
    assert [row.split()[-2:] for row in rows if "proxy" in row] == [["-", "-"]]
