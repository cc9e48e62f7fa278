"""Upload limits on the real web server (gunicorn): a body over the limit is answered before it is sent."""

import http.client
import json
from urllib.parse import urlsplit

import pytest
import requests

pytestmark = pytest.mark.integration


def test_it_answers_413_to_a_declared_body_over_the_limit_before_it_is_sent(control_plane):
    address = urlsplit(control_plane.url)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=15)
    conn.putrequest("POST", "/api/v1/services/1/versions/")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(10 * 2**30))
    conn.endheaders(b"--x\r\n" * 200)  # 10 GB announced, 1 KB sent
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"detail": "the upload is larger than the limit of 100 MB"}
    conn.close()
    # The server goes on serving.
    assert requests.get(control_plane.url + "/admin/login/", timeout=10).status_code == 200
