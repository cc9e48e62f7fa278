"""The README's first steps for every runtime: `conpaas push` of examples/<runtime> is taken by the
server and served (by the fake fleet's routers, `server`). What each example says when served, and
its request in the access log, is test_real_platform.py's to show on real nodes."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("runtime", ["python", "php", "static", "java"])
def test_each_example_is_pushed_and_served(cli, logged_in, server, runtime):
    service = logged_in.create_service(f"ex-{runtime}", runtime)

    result = cli("push", service["name"], EXAMPLES / runtime, "--env", "production", "--label", "ex-1")

    assert result.code == 0, result.err
    if runtime == "java":  # a folder whose only file is a .war uploads it as it is
        assert "holds only hello.war: uploading it as it is" in result.err.splitlines()[0], result.err
    assert server.served(service) == "ex-1"


def test_the_checked_in_war_is_what_its_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location("build_war", EXAMPLES / "java" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rebuilt = build.build(war=tmp_path / "hello.war")
    assert rebuilt.read_bytes() == (EXAMPLES / "java" / "hello.war").read_bytes()
    assert "WEB-INF/web.xml" in zipfile.ZipFile(rebuilt).namelist()
