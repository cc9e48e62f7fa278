"""API tokens (services/tokens.py through the REST API): issued for a password, stored as a
digest, expiring, revoked by a password change and by their owner; each user sees only theirs."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from services import tokens
from services.models import ApiToken
from tests.api.conftest import client_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def sign_in(username="alice", password="pw") -> APIClient:
    return APIClient().post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_it_issues_a_token_for_a_password_that_signs_api_calls_in(alice):
    response = sign_in()

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiry"}
    assert len(body["token"]) == 64
    assert with_token(body["token"]).get("/api/v1/services/").status_code == 200
    token = ApiToken.objects.get(user=alice)
    expected = timezone.now() + timedelta(days=30)
    assert abs((token.expiry - expected).total_seconds()) < 60


def test_it_refuses_a_wrong_password_and_issues_nothing(alice):
    response = sign_in(password="nope")

    assert response.status_code == 400
    assert response.json() == {"detail": "unable to sign in with that username and password"}
    assert not ApiToken.objects.exists()


def test_it_names_the_missing_field(alice):
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()
    assert not ApiToken.objects.exists()


def test_it_stores_no_token_string_only_its_digest(alice):
    key = sign_in().json()["token"]

    dump = StringIO()
    call_command("dumpdata", stdout=dump)  # every row of every table the models know
    assert key not in dump.getvalue()
    token = ApiToken.objects.get(user=alice)
    assert token.digest == hashlib.sha512(key.encode()).hexdigest()
    assert key.startswith(token.token_key) and len(token.token_key) == 15


def test_it_takes_the_expiry_from_the_setting(alice, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(days=2)}

    sign_in()

    expiry = ApiToken.objects.get(user=alice).expiry
    assert abs((expiry - (timezone.now() + timedelta(days=2))).total_seconds()) < 60


def test_it_refuses_an_expired_token_with_401_and_forgets_it(alice):
    token, key = tokens.issue(alice)
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(seconds=1))

    response = with_token(key).get("/api/v1/services/")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_it_refuses_an_unknown_token_with_401():
    assert with_token("0" * 64).get("/api/v1/services/").status_code == 401
    assert APIClient().get("/api/v1/services/").status_code == 401


def test_a_password_change_revokes_every_token_of_the_user(alice, bob):
    _, first = tokens.issue(alice)
    _, second = tokens.issue(alice)
    _, bobs = tokens.issue(bob)

    alice.set_password("a-new-password")
    alice.save()

    assert with_token(first).get("/api/v1/services/").status_code == 401
    assert with_token(second).get("/api/v1/services/").status_code == 401
    assert with_token(bobs).get("/api/v1/services/").status_code == 200


def test_a_password_change_in_the_admin_revokes_the_tokens(alice):
    _, key = tokens.issue(alice)
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)

    response = admin.post(
        f"/admin/auth/user/{alice.pk}/password/",
        {"password1": "Another-pw-42", "password2": "Another-pw-42", "usable_password": "true"},
    )

    assert response.status_code == 302, response.content
    assert with_token(key).get("/api/v1/services/").status_code == 401


def test_signing_in_again_or_other_saves_of_the_user_keep_the_tokens(alice):
    _, key = tokens.issue(alice)

    assert sign_in().status_code == 200  # saves last_login
    alice.first_name = "Alice"
    alice.save()

    assert with_token(key).get("/api/v1/services/").status_code == 200
    assert ApiToken.objects.filter(user=alice).count() == 2


def test_delete_revokes_the_token_the_request_is_sent_with(alice):
    _, key = tokens.issue(alice)
    _, other = tokens.issue(alice)

    response = with_token(key).delete("/api/v1/auth/token/")

    assert response.status_code == 204
    assert with_token(key).get("/api/v1/services/").status_code == 401
    assert with_token(other).get("/api/v1/services/").status_code == 200


def test_delete_without_a_token_has_nothing_to_revoke(alice):
    tokens.issue(alice)
    browser = APIClient()
    browser.force_login(alice)

    response = browser.delete("/api/v1/auth/token/")

    assert response.status_code == 400
    assert response.json() == {"detail": "this request was not sent with a token: there is none to revoke"}
    assert ApiToken.objects.filter(user=alice).count() == 1
    assert APIClient().delete("/api/v1/auth/token/").status_code == 401


def test_it_lists_only_the_users_own_live_tokens_and_marks_the_current_one(alice, bob):
    old, _ = tokens.issue(alice)
    expired, _ = tokens.issue(alice)
    ApiToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - timedelta(minutes=1))
    tokens.issue(bob)
    current, key = tokens.issue(alice)

    response = with_token(key).get("/api/v1/auth/tokens/")

    assert response.status_code == 200
    body = response.json()
    assert [t["id"] for t in body] == [current.pk, old.pk]
    assert [t["current"] for t in body] == [True, False]
    assert set(body[0]) == {"id", "prefix", "created", "expiry", "last_used", "current"}
    assert key.startswith(body[0]["prefix"]) and len(body[0]["prefix"]) == 8
    assert body[0]["last_used"] is not None and body[1]["last_used"] is None


def test_it_notes_a_tokens_last_use_at_most_once_a_minute(alice):
    token, key = tokens.issue(alice)
    client = with_token(key)

    client.get("/api/v1/services/")
    first = ApiToken.objects.get(pk=token.pk).last_used
    client.get("/api/v1/services/")
    assert ApiToken.objects.get(pk=token.pk).last_used == first

    ApiToken.objects.filter(pk=token.pk).update(last_used=first - timedelta(minutes=2))
    client.get("/api/v1/services/")
    assert ApiToken.objects.get(pk=token.pk).last_used > first


def test_the_owner_revokes_a_token_by_its_id(alice):
    other, other_key = tokens.issue(alice)
    api = client_for(alice)

    response = api.delete(f"/api/v1/auth/tokens/{other.pk}/")

    assert response.status_code == 204
    assert with_token(other_key).get("/api/v1/services/").status_code == 401
    assert api.get("/api/v1/auth/tokens/").status_code == 200


def test_revoking_someone_elses_token_is_a_404_and_leaves_it(alice, bob):
    bobs, bobs_key = tokens.issue(bob)
    api = client_for(alice)

    for token_id in (bobs.pk, 999_999, "abc"):
        response = api.delete(f"/api/v1/auth/tokens/{token_id}/")
        assert response.status_code == 404, token_id
        assert response.json() == {"detail": f"you have no token with id {token_id}"}
    assert with_token(bobs_key).get("/api/v1/services/").status_code == 200


def test_staff_too_see_only_their_own_tokens(alice):
    tokens.issue(alice)
    staff = UserFactory(username="root", is_staff=True)

    body = client_for(staff).get("/api/v1/auth/tokens/").json()

    assert len(body) == 1 and body[0]["current"]


def test_the_admin_lists_tokens_without_any_secret(alice):
    token, key = tokens.issue(alice)
    staff = UserFactory(username="root", is_staff=True, is_superuser=True)
    admin = Client()
    admin.force_login(staff)

    page = admin.get("/admin/services/apitoken/")
    detail = admin.get(f"/admin/services/apitoken/{token.pk}/change/")

    assert page.status_code == 200 and detail.status_code == 200
    assert token.prefix in page.content.decode()
    for html in (page.content.decode(), detail.content.decode()):
        assert key not in html and token.digest not in html and token.token_key not in html
    assert admin.get("/admin/authtoken/tokenproxy/").status_code == 404
