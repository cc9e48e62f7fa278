"""The README's first steps for every runtime: `conpaas push` of examples/<runtime> serves it, and
`conpaas logs` shows the request in the instance's access log."""

import importlib.util
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

from conpaas_common.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("runtime", "says"),
    [
        ("python", "Hello from ex-python: production serves version ex-1\n"),
        ("php", "Hello from ex-php: production serves version ex-1 (PHP "),
        ("static", "<h1>Hello from a static site</h1>"),
        ("java", "Hello from ex-java: production serves version ex-1 (Tomcat Apache Tomcat/10"),
    ],
)
def test_each_example_is_pushed_and_served(cli, logged_in, runtime, says):
    service = logged_in.create_service(f"ex-{runtime}", runtime)
    try:
        result = cli("push", service["name"], EXAMPLES / runtime, "--env", "production", "--label", "ex-1")
        assert result.code == 0, result.err
        if runtime == "java":  # a folder whose only file is a .war uploads it as it is
            assert "holds only hello.war: uploading it as it is" in result.err.splitlines()[0], result.err
        mark = uuid.uuid4().hex
        answer = requests.get(service["url"], params={"seen": mark}, timeout=10)
        assert answer.status_code == 200 and says in answer.text, answer.text

        # The request shows in its instance's access log (gunicorn's, nginx's, Tomcat's), through the API.
        def logged():
            found = cli("logs", service["name"], "--json").json()["lines"]
            return [line for line in found if line["file"] == "access.log" and f"seen={mark}" in line["line"]]

        assert wait_until(logged, timeout=10), cli("logs", service["name"]).out
    finally:
        logged_in.wait_operation(logged_in.delete(f"/api/v1/services/{service['id']}/").json())


def test_the_checked_in_war_is_what_its_script_builds(tmp_path):
    spec = importlib.util.spec_from_file_location("build_war", EXAMPLES / "java" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rebuilt = build.build(war=tmp_path / "hello.war")
    assert rebuilt.read_bytes() == (EXAMPLES / "java" / "hello.war").read_bytes()
    assert "WEB-INF/web.xml" in zipfile.ZipFile(rebuilt).namelist()
