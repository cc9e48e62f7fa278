"""`conpaas db`'s refusals, against a live control plane (`server`). Loading a dump with a live
counter, then the client shell and the export, need a real PostgreSQL server: test_real_platform.py."""

import pytest


@pytest.fixture
def database(logged_in):
    return logged_in.create_service("clidb", "postgresql")


def test_it_refuses_a_bad_dump_and_a_web_service_in_one_line(cli, logged_in, database, tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_bytes(b"\x00\xffnot sql")
    result = cli("db", "clidb", "load", bad)
    assert result.code != 0
    assert "neither a plain SQL script nor a pg_dump custom-format archive" in result.err
    assert cli("db", "clidb", "load", tmp_path / "missing.sql").err.startswith("error: ")

    # The credentials, as the API gives them to the owner, for a client of one's own.
    said = cli("db", "clidb", "credentials")
    assert said.code == 0 and '"user": "conpaas"' in said.out and '"password": "' in said.out

    web = logged_in.post("/api/v1/services/", json={"name": "notdb", "runtime": "static"}).json()
    logged_in.wait_operation(web["operation"])
    result = cli("db", "notdb")
    assert result.code != 0 and "not a database (postgresql, redis, mysql)" in result.err
