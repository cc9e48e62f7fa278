"""`conpaas db SERVICE backups|backup|restore` against a live control plane on the fake platform
(its database clients stand-ins, as in tests/workflows/test_backups.py); the real path is
tests/e2e/test_backups.py."""

import pytest

from services import data_probes


@pytest.fixture(autouse=True)
def store(settings, monkeypatch):
    settings.CONPAAS_BACKUP_S3_ENDPOINT = "http://10.9.9.9:8333"
    settings.CONPAAS_BACKUP_S3_BUCKET = "conpaas-backups"
    monkeypatch.setattr(data_probes, "pg_table_counts", lambda server: {"conpaas/public.items": 3})


@pytest.fixture
def database(logged_in):
    return logged_in.create_service("clidb", "postgresql")


def test_it_takes_lists_and_restores_a_backup(cli, database):
    taken = cli("db", "clidb", "backup")
    assert taken.code == 0, taken.err
    assert "backup succeeded" in taken.out

    listed = cli("db", "clidb", "backups", "--json").json()
    assert f"backup {listed[0]['id']}: " in taken.out and "verified yes" in taken.out
    assert len(listed) == 1 and listed[0]["verified"] is True and listed[0]["state"] == "completed"
    shown = cli("db", "clidb", "backups")
    assert "backups every 24 h, kept 7 days" in shown.out
    assert "restorable to any moment from" in shown.out
    assert f"{listed[0]['id']}" in shown.out and "yes" in shown.out

    unconfirmed = cli("db", "clidb", "restore", listed[0]["id"])
    assert unconfirmed.code != 0
    assert "not restored: confirm by typing clidb on a terminal, or give --yes" in unconfirmed.err
    restored = cli("db", "clidb", "restore", listed[0]["id"], "--yes", "--json")
    assert restored.code == 0, restored.err
    assert restored.json()["kind"] == "restore" and restored.json()["state"] == "succeeded"

    copied = cli("db", "clidb", "restore", listed[0]["id"], "--into", "clicopy")
    assert copied.code == 0, copied.err
    copy = cli("services", "show", "clicopy", "--json").json()
    assert f"clicopy: {copy['url']}" in copied.out


def test_a_failed_backup_is_a_failure_and_the_list_says_the_problem(cli, database, server):
    server.fleet.backup_failing = "disk full"
    failed = cli("db", "clidb", "backup")
    assert failed.code != 0 and "backup failed: the agent of" in failed.err
    shown = cli("db", "clidb", "backups")
    assert "problem: backup failed" in shown.err


def test_it_refuses_bad_restores_in_one_line(cli, database):
    neither = cli("db", "clidb", "restore", "--yes")
    assert neither.code != 0 and "backup: give either a backup or a time" in neither.err
    assert "a backup's id is a number" in cli("db", "clidb", "restore", "abc", "--yes").err
    assert "--time, --into and --yes go with" in cli("db", "clidb", "backups", "--time", "2026-12-07T20:00:00Z").err
    outside = cli("db", "clidb", "restore", "--time", "2026-12-07T20:00:00Z", "--yes")
    assert outside.code != 0 and "time: " in outside.err and "outside the recovery window" in outside.err
