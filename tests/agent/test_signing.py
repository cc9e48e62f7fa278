import time

import pytest

from conpaas_common import signing
from tests.agent.agent_helpers import SECRET


def test_it_accepts_a_good_signature():
    now = int(time.time())
    sig = signing.sign("s3cret", "PUT", "/v1/instances/a?x=1", now, b'{"a": 1}')
    assert signing.verify("s3cret", "PUT", "/v1/instances/a?x=1", str(now), sig, b'{"a": 1}')


@pytest.mark.parametrize(
    "secret, method, path, body, skew",
    [
        ("other", "PUT", "/v1/x", b"{}", 0),  # wrong secret
        ("s3cret", "GET", "/v1/x", b"{}", 0),  # other method
        ("s3cret", "PUT", "/v1/y", b"{}", 0),  # other path
        ("s3cret", "PUT", "/v1/x", b"{ }", 0),  # tampered body
        ("s3cret", "PUT", "/v1/x", b"{}", 301),  # too old
        ("s3cret", "PUT", "/v1/x", b"{}", -301),  # too far ahead
    ],
)
def test_it_rejects_a_bad_signature(secret, method, path, body, skew):
    now = int(time.time())
    sig = signing.sign("s3cret", "PUT", "/v1/x", now - skew, b"{}")
    assert not signing.verify(secret, method, path, str(now - skew), sig, body)


def test_it_rejects_missing_or_malformed_headers():
    assert not signing.verify("s", "GET", "/", None, "ab", b"")
    assert not signing.verify("s", "GET", "/", "123", None, b"")
    assert not signing.verify("s", "GET", "/", "soon", "ab", b"")


def test_it_signs_headers_that_verify():
    headers = signing.signed_headers("k", "POST", "/v1/proxy/reload", b"")
    assert signing.verify(
        "k",
        "POST",
        "/v1/proxy/reload",
        headers["X-Conpaas-Timestamp"],
        headers["X-Conpaas-Signature"],
        b"",
        nonce=headers["X-Conpaas-Nonce"],
    )
    assert not signing.verify(
        "k",
        "POST",
        "/v1/proxy/reload",
        headers["X-Conpaas-Timestamp"],
        headers["X-Conpaas-Signature"],
        b"",
        nonce="another",
    ), "the nonce is signed"


def test_it_accepts_each_nonce_once():
    guard = signing.ReplayGuard(keep=10)
    assert guard.first_use("abc", now=100.0)
    assert not guard.first_use("abc", now=105.0)
    assert guard.first_use("def", now=105.0)
    assert guard.first_use("abc", now=111.0), "forgotten once its timestamp can no longer be valid"
    assert not guard.first_use("", now=111.0) and not guard.first_use(None, now=111.0)


@pytest.mark.integration
def test_it_answers_401_to_bad_signatures_over_http(start_agent):
    agent = start_agent(roles=["backend"])
    assert agent.call("GET", "/v1/status").status == 200
    assert int((agent.home / "agent.pid").read_text()) == agent.process.pid
    unsigned = agent.call("GET", "/v1/status", secret=None)
    assert unsigned.status == 401
    assert "signature" in unsigned.json()["error"]
    assert agent.call("GET", "/v1/status", secret="wrong").status == 401
    old = int(time.time()) - 400
    assert agent.call("GET", "/v1/status", timestamp=old).status == 401
    # A body other than the signed one.
    from conpaas_common import signing as s

    headers = s.signed_headers(SECRET, "PUT", "/v1/instances/x", b'{"version": "1"}')
    tampered = agent.call("PUT", "/v1/instances/x", raw=b'{"version": "2"}', secret=None, headers=headers)
    assert tampered.status == 401
    # The same signed request a second time: refused as a replay.
    replayed = s.signed_headers(SECRET, "GET", "/v1/status", b"")
    assert agent.call("GET", "/v1/status", secret=None, headers=replayed).status == 200
    again = agent.call("GET", "/v1/status", secret=None, headers=replayed)
    assert again.status == 401 and "replay" in again.json()["error"]
    # Every route is protected, unknown ones too.
    assert agent.call("GET", "/v1/nothing", secret=None).status == 401
    assert agent.call("GET", "/v1/nothing").status == 404
    # The secret never reaches the log.
    assert SECRET not in (agent.home / "agent.log").read_text()
