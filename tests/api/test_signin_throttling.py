"""The token endpoint under django-axes: N wrong passwords for one account (from any addresses),
or from one address (for any accounts), and sign-ins are refused with 429 and Retry-After, the
right password included, until the cool-off has passed. (tests/conftest.py: `lockout`.)"""

import pytest
from rest_framework.test import APIClient

from services.models import ApiToken
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def sign_in(username: str, password: str, address: str = "10.0.0.1"):
    return APIClient().post(
        "/api/v1/auth/token/", {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )


def assert_locked_out(response, lockout):
    assert response.status_code == 429
    assert response.json()["detail"].startswith(
        "too many failed sign-ins for this account or from this address; try again in "
    )
    assert 0 < int(response["Retry-After"]) <= lockout.cool_off.total_seconds()


def test_it_locks_an_account_out_after_n_wrong_passwords_from_anywhere(alice, lockout):
    answers = [sign_in("alice", "wrong", f"10.0.1.{n}").status_code for n in range(lockout.limit)]

    assert answers == [400] * (lockout.limit - 1) + [429]
    right = sign_in("alice", "pw", "10.0.2.1")  # a fresh address, the right password
    assert_locked_out(right, lockout)
    assert "token" not in right.json()
    assert not ApiToken.objects.exists()
    assert sign_in("bob-not-locked", "x", "10.0.2.1").status_code == 400  # other accounts go on


def test_it_locks_an_address_out_after_n_wrong_passwords_for_any_accounts(alice, bob, lockout):
    for n in range(lockout.limit):
        sign_in(f"nobody{n}", "wrong", "10.0.3.1")

    assert_locked_out(sign_in("alice", "pw", "10.0.3.1"), lockout)
    assert not ApiToken.objects.exists()
    assert sign_in("bob", "pw", "10.0.3.2").status_code == 200  # from another address: fine


def test_the_right_password_is_taken_again_after_the_cool_off(alice, lockout):
    for _ in range(lockout.limit):
        sign_in("alice", "wrong")
    assert sign_in("alice", "pw").status_code == 429

    lockout.pass_cool_off()

    response = sign_in("alice", "pw")
    assert response.status_code == 200 and response.json()["token"]


def test_tries_during_the_lockout_do_not_extend_it(alice, lockout):
    for _ in range(lockout.limit):
        sign_in("alice", "wrong")
    first = int(sign_in("alice", "wrong")["Retry-After"])
    for _ in range(5):
        assert int(sign_in("alice", "wrong")["Retry-After"]) <= first

    lockout.pass_cool_off()
    assert sign_in("alice", "pw").status_code == 200


def test_a_success_forgives_that_accounts_failures_from_that_address_only(alice, bob, lockout):
    sign_in("alice", "wrong", "10.0.4.1")
    sign_in("alice", "wrong", "10.0.4.9")  # someone else, elsewhere
    sign_in("carol", "wrong", "10.0.4.1")
    assert sign_in("alice", "pw", "10.0.4.1").status_code == 200

    # alice's own typo from 10.0.4.1 is forgiven: one more failure there does not lock her out...
    assert sign_in("alice", "wrong", "10.0.4.1").status_code == 400
    # ...but the address's failure against carol still counts: a third failure locks the address.
    assert sign_in("dave", "wrong", "10.0.4.1").status_code == 429
    # and the failure against alice from elsewhere still counts for her account.
    assert sign_in("alice", "wrong", "10.0.4.7").status_code == 429


def test_a_forwarded_for_header_does_not_give_a_fresh_address(alice, lockout):
    for n in range(lockout.limit):
        APIClient().post(
            "/api/v1/auth/token/",
            {"username": f"nobody{n}", "password": "x"},
            format="json",
            REMOTE_ADDR="10.0.5.1",
            HTTP_X_FORWARDED_FOR=f"192.0.2.{n}",
        )

    assert sign_in("alice", "pw", "10.0.5.1").status_code == 429


def test_the_default_limit_is_ten_failures_within_fifteen_minutes(settings):
    UserFactory(username="carol")
    assert settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 900
    answers = [sign_in("carol", "wrong").status_code for _ in range(10)]
    assert answers == [400] * 9 + [429]
