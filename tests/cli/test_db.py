"""`conpaas db`: a client shell with the credentials, an export, and a dump load with a live counter."""

import os
import subprocess
import sys

import pytest

from tests.harness import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def database(logged_in):
    response = logged_in.create_service("clidb", "postgresql")
    yield response
    logged_in.wait_operation(logged_in.delete(f"/api/v1/services/{response['id']}/").json())


def conpaas(config_file, *argv, stdin=""):
    """The CLI in a process of its own: `db` execs the database client in its place."""
    env = {**os.environ, "CONPAAS_CONFIG": str(config_file)}
    argv = [sys.executable, "-m", "conpaas_cli", *argv]
    return subprocess.run(argv, input=stdin, env=env, capture_output=True, text=True, cwd=REPO, timeout=60)


def test_it_loads_a_dump_with_a_counter_then_opens_psql_and_dumps(cli, config_file, database, tmp_path):
    dump = tmp_path / "wiki.sql"
    # Big enough that a load outlasts a few of the CLI's polls, even on a quiet machine.
    rows = "".join(f"{i}\tpage {i}\n" for i in range(2_000_000))
    dump.write_text(f"CREATE TABLE pages (id int, title text);\nCOPY pages FROM stdin;\n{rows}\\.\n")
    result = cli("db", "clidb", "load", dump)
    assert result.code == 0, result.err
    assert "2,000,000 rows loaded into clidb" in result.out
    # The counter while it loads: one line per change when not on a terminal.
    assert any("bytes read" in line and "rows loaded" in line for line in result.err.splitlines()), result.err

    shell = conpaas(config_file, "db", "clidb", stdin="SELECT count(*) FROM pages;\n")
    assert shell.returncode == 0, shell.stderr
    assert "2000000" in shell.stdout

    exported = conpaas(config_file, "db", "clidb", "dump")
    assert exported.returncode == 0, exported.stderr
    assert "COPY public.pages" in exported.stdout and "1999999\tpage 1999999" in exported.stdout


def test_it_refuses_a_bad_dump_and_a_web_service_in_one_line(cli, logged_in, database, tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_bytes(b"\x00\xffnot sql")
    result = cli("db", "clidb", "load", bad)
    assert result.code != 0
    assert "neither a plain SQL script nor a pg_dump custom-format archive" in result.err
    assert cli("db", "clidb", "load", tmp_path / "missing.sql").err.startswith("error: ")

    web = logged_in.post("/api/v1/services/", json={"name": "notdb", "runtime": "static"}).json()
    try:
        result = cli("db", "notdb")
        assert result.code != 0 and "not a data service" in result.err
    finally:
        logged_in.wait_operation(
            logged_in.wait_operation(web["operation"]) and logged_in.delete(f"/api/v1/services/{web['id']}/").json()
        )
