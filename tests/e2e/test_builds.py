"""Builds on a real control plane: a python version whose requirements.txt names packages of the
package index deploys on an (isolated, as root) node that has no way out; the build is made once,
in a sandbox whose only way out is the package proxy, and reused by the next version with the
same requirements; a build that fails says why and switches nothing."""

from pathlib import Path

import pytest
import requests

from services.clouds.isolation import unavailable_reason
from tests.apps import zip_archive

pytestmark = pytest.mark.integration

# pg8000 and what it needs (scramp, asn1crypto, python-dateutil, six): five packages of the index.
PG8000_APP = """\
import pg8000, scramp

def application(environ, start_response):
    body = f"{pg8000.__name__} {scramp.__name__} {__import__('os').environ['CONPAAS_VERSION']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def events(api, service_id: int, action: str) -> list[dict]:
    return [e for e in api.get(f"/api/v1/services/{service_id}/events/").json() if e["action"] == action]


def test_a_version_with_index_requirements_is_built_once_and_served_from_an_offline_node(control_plane):
    api = control_plane.client("builder")
    service = api.create_service("built")
    app = {"wsgi.py": PG8000_APP, "requirements.txt": "pg8000\n"}
    v1 = api.upload(service["id"], zip_archive(app), "v1").json()

    operation = api.deploy(service["id"], "production", v1["id"], timeout=300)

    assert operation["state"] == "succeeded", operation["error"]
    url = api.get(f"/api/v1/services/{service['id']}/").json()["url"]
    assert requests.get(url, timeout=10).text == "pg8000 scramp v1"
    built = events(api, service["id"], "build")
    assert any(e["message"].startswith("built v1 in ") and "pg8000" in e["message"] for e in built), built

    # The same requirements in another version: no build, the stored one.
    v2 = api.upload(service["id"], zip_archive({**app, "wsgi.py": PG8000_APP + "# v2\n"}), "v2").json()
    assert api.deploy(service["id"], "development", v2["id"])["state"] == "succeeded"
    assert any("v2 reuses the build" in e["message"] for e in events(api, service["id"], "build"))


def test_a_build_that_fails_fails_the_deploy_with_the_installers_last_lines(control_plane):
    api = control_plane.client("builder")
    service = api.create_service("unbuildable")
    app = {"wsgi.py": PG8000_APP, "requirements.txt": "conpaas-no-such-package-xyz==1.0\n"}
    version = api.upload(service["id"], zip_archive(app), "v1").json()

    operation = api.deploy(service["id"], "production", version["id"])

    assert operation["state"] == "failed"
    assert "the build of v1 failed" in operation["error"]
    assert "conpaas-no-such-package-xyz" in operation["error"], "pip's own words say what is missing"
    environments = api.get(f"/api/v1/services/{service['id']}/environments/").json()
    assert next(e for e in environments if e["name"] == "production")["version"] is None


@pytest.mark.skipif(bool(unavailable_reason(Path("/var/lib/conpaas/nodes"))), reason="builds are not isolated here")
def test_a_build_reaches_nothing_but_the_package_proxy(control_plane):
    """A requirement naming a file on another host: the sandbox cannot connect there."""
    api = control_plane.client("builder")
    service = api.create_service("escaper")
    # 127.0.0.1 of the sandbox is its own; the control plane's port at the gateway is closed to it.
    requirement = f"hello @ http://10.77.0.1:{control_plane.port}/hello-0.1-py3-none-any.whl\n"
    app = {"wsgi.py": PG8000_APP, "requirements.txt": requirement}
    version = api.upload(service["id"], zip_archive(app), "v1").json()

    operation = api.deploy(service["id"], "production", version["id"], timeout=180)

    assert operation["state"] == "failed"
    assert "the build of v1 failed" in operation["error"]
    assert "Connection refused" in operation["error"], "refused at once, not timed out"


def test_a_php_site_gets_its_composer_vendor_built_from_packages_in_its_archive(control_plane):
    """composer install --no-dev in the sandbox: a path repository of the archive (Packagist is
    not reachable from here), its autoloader in vendor/ on the node."""
    api = control_plane.client("builder")
    service = api.create_service("composed", runtime="php")
    site = {
        "index.php": "<?php require __DIR__ . '/vendor/autoload.php'; echo \\Acme\\Greeter::greet();\n",
        "composer.json": (
            '{"repositories": [{"packagist.org": false}, {"type": "path", "url": "packages/greeter"}],'
            ' "require": {"acme/greeter": "*"}}'
        ),
        "packages/greeter/composer.json": (
            '{"name": "acme/greeter", "version": "1.0.0", "autoload": {"psr-4": {"Acme\\\\": "src/"}}}'
        ),
        "packages/greeter/src/Greeter.php": (
            "<?php\nnamespace Acme;\nclass Greeter { static function greet() { return 'hello from vendor'; } }\n"
        ),
    }
    version = api.upload(service["id"], zip_archive(site), "v1").json()

    operation = api.deploy(service["id"], "production", version["id"], timeout=180)

    assert operation["state"] == "succeeded", operation["error"]
    url = api.get(f"/api/v1/services/{service['id']}/").json()["url"]
    assert requests.get(url, timeout=10).text == "hello from vendor"
