"""The console's API tokens page: the user's own live tokens, without secrets; revoke one."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from services import tokens
from services.models import ApiToken

pytestmark = pytest.mark.django_db


def test_it_lists_the_users_own_live_tokens_without_their_secrets(client, alice, bob):
    mine, key = tokens.issue(alice)
    expired, _ = tokens.issue(alice)
    ApiToken.objects.filter(pk=expired.pk).update(expiry=timezone.now() - timedelta(minutes=1))
    bobs, _ = tokens.issue(bob)

    page = client.get("/tokens/")

    assert page.status_code == 200
    html = page.content.decode()
    assert f"<code>{mine.prefix}…</code>" in html
    assert expired.prefix not in html and bobs.prefix not in html
    assert key not in html and mine.digest not in html and mine.token_key not in html
    assert f'action="/tokens/{mine.pk}/revoke/"' in html
    assert 'href="/tokens/">API tokens</a>' in html  # in the header of every page


def test_it_says_when_there_is_no_token(client):
    assert "You have no API tokens." in client.get("/tokens/").content.decode()


def test_it_revokes_a_token_with_a_post(client, alice):
    token, key = tokens.issue(alice)

    assert client.get(f"/tokens/{token.pk}/revoke/").status_code == 405
    response = client.post(f"/tokens/{token.pk}/revoke/", follow=True)

    assert response.redirect_chain == [("/tokens/", 302)]
    assert f"Revoked the token starting {token.prefix}" in response.content.decode()
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_another_users_token_is_a_404_and_stays(client, bob):
    bobs, _ = tokens.issue(bob)

    assert client.post(f"/tokens/{bobs.pk}/revoke/").status_code == 404
    assert ApiToken.objects.filter(pk=bobs.pk).exists()


def test_it_asks_an_anonymous_visitor_to_sign_in(alice):
    token, _ = tokens.issue(alice)

    assert Client().get("/tokens/")["Location"] == "/login/?next=/tokens/"
    assert Client().post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert ApiToken.objects.filter(pk=token.pk).exists()
