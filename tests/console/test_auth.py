import pytest
from django.test import Client

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
