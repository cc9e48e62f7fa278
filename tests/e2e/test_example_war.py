"""A real Java application, unchanged: Tomcat's standard example webapp (Debian's
tomcat10-examples), packed into a .war as it is installed and deployed as a java service."""

import io
import os
import zipfile
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

EXAMPLES = Path("/usr/share/tomcat10-examples/examples")


def examples_war() -> bytes:
    """The examples webapp's tree, every file as installed, zipped into a WAR."""
    assert (EXAMPLES / "WEB-INF" / "web.xml").is_file(), "tomcat10-examples is not installed: ./run setup installs it"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, _dirs, files in os.walk(EXAMPLES, followlinks=True):
            for name in files:
                path = Path(folder) / name
                archive.write(path, path.relative_to(EXAMPLES).as_posix())
    return buffer.getvalue()


def test_tomcats_example_war_serves_its_servlets_and_jsps(control_plane):
    api = control_plane.client("erin")
    with api.serving("examples", "java", examples_war(), "examples.war") as (service, _version):
        url = service["url"]

        # A compiled servlet from the WAR's WEB-INF/classes, mapped in its web.xml.
        servlet = requests.get(f"{url}servlets/servlet/HelloWorldExample", timeout=30)
        assert servlet.status_code == 200, servlet.text[:2000]
        assert "<h1>Hello World!</h1>" in servlet.text

        # A JSP Tomcat compiles on first request, using JSTL from WEB-INF/lib and the WAR's own
        # tag library (its functions are classes in WEB-INF/classes).
        jsp = requests.get(f"{url}jsp/jsp2/el/functions.jsp", params={"foo": "ConPaaS"}, timeout=60)
        assert jsp.status_code == 200, jsp.text[:2000]
        assert "<td>SaaPnoC&nbsp;</td>" in jsp.text, jsp.text[:2000]

        assert "Servlets examples" in requests.get(f"{url}index.html", timeout=10).text
        assert requests.get(f"{url}no-such-page", timeout=10).status_code == 404
