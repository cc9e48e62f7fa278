import pytest
from django.test import Client

from images.conpaas_agent.router.config import CONSOLE_COOKIE_PREFIX
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_it_sends_an_anonymous_visitor_to_the_sign_in_page():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_it_signs_in_with_a_password_and_lands_on_the_dashboard():
    UserFactory(username="carol")
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200
    assert b'<label for="id_username">Username</label>' in page.content

    response = client.post("/login/", {"username": "carol", "password": "pw"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_it_shows_a_wrong_password_in_place():
    UserFactory(username="carol")
    response = Client().post("/login/", {"username": "carol", "password": "nope"})
    assert response.status_code == 200
    assert b'role="alert"' in response.content


def test_it_signs_out_with_a_post_only(client):
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_it_names_its_cookies_so_that_routers_keep_them_from_apps():
    UserFactory(username="carol")
    client = Client(enforce_csrf_checks=True)
    page = client.get("/login/")
    token = page.context["csrf_token"]
    response = client.post("/login/", {"username": "carol", "password": "pw", "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == "/"
    # Every cookie the console set, and only ones every router strips and refuses.
    assert set(client.cookies) == {"conpaas_console_session", "conpaas_console_csrf"}
    assert all(name.startswith(CONSOLE_COOKIE_PREFIX) for name in client.cookies)
    assert client.cookies["conpaas_console_csrf"]["httponly"]
    # An app's own `sessionid` on the same host no longer signs the console's user out.
    client.cookies["sessionid"] = "set-by-an-app"
    assert client.get("/").status_code == 200
