import pytest
from django.test import Client

from conpaas_common.wire import CONSOLE_COOKIE_PREFIX
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


def console_sign_in(username, password, address="10.0.0.1"):
    return Client().post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def admin_sign_in(username, password, address="10.0.0.1"):
    return Client().post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )


def assert_locked_out_page(response, lockout):
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= lockout.cool_off.total_seconds()
    html = response.content.decode()
    assert '<div class="error" role="alert"><p>Sign-in refused: too many failed sign-ins for this account' in html
    assert "conpaas_console_session" not in response.cookies


@pytest.mark.parametrize("sign_in", [console_sign_in, admin_sign_in], ids=["console", "admin"])
def test_it_locks_an_account_out_after_n_wrong_passwords(sign_in, lockout):
    UserFactory(username="carol", is_staff=True)

    answers = [sign_in("carol", "wrong", f"10.0.1.{n}").status_code for n in range(lockout.limit)]

    assert answers == [200] * (lockout.limit - 1) + [429]  # the form again, in place; then the lockout
    assert_locked_out_page(sign_in("carol", "pw", "10.0.2.1"), lockout)


@pytest.mark.parametrize("sign_in", [console_sign_in, admin_sign_in], ids=["console", "admin"])
def test_it_locks_an_address_out_after_n_wrong_passwords(sign_in, lockout):
    UserFactory(username="carol", is_staff=True)
    for n in range(lockout.limit):
        sign_in(f"nobody{n}", "wrong", "10.0.3.1")

    assert_locked_out_page(sign_in("carol", "pw", "10.0.3.1"), lockout)
    assert sign_in("carol", "pw", "10.0.3.2").status_code == 302  # from elsewhere: signed in


@pytest.mark.parametrize("sign_in", [console_sign_in, admin_sign_in], ids=["console", "admin"])
def test_it_signs_in_again_after_the_cool_off(sign_in, lockout):
    UserFactory(username="carol", is_staff=True)
    for _ in range(lockout.limit):
        sign_in("carol", "wrong")
    assert sign_in("carol", "pw").status_code == 429

    lockout.pass_cool_off()

    assert sign_in("carol", "pw").status_code == 302


def test_one_lockout_counts_the_failures_of_every_sign_in_form(lockout):
    from rest_framework.test import APIClient

    UserFactory(username="carol", is_staff=True)
    console_sign_in("carol", "wrong")
    admin_sign_in("carol", "wrong")
    APIClient().post("/api/v1/auth/token/", {"username": "carol", "password": "wrong"}, format="json")

    assert_locked_out_page(console_sign_in("carol", "pw", "10.0.9.9"), lockout)


def test_a_failed_sign_in_is_kept_without_its_password_or_csrf_token(lockout):
    from axes.models import AccessAttempt

    UserFactory(username="dora")  # with no account at all, /login/ offers the first one instead
    client = Client(enforce_csrf_checks=True)
    token = str(client.get("/login/").context["csrf_token"])
    client.post("/login/", {"username": "carol", "password": "secret-guess-1", "csrfmiddlewaretoken": token})

    attempt = AccessAttempt.objects.get()
    assert attempt.failures_since_start == 1
    assert "secret-guess-1" not in attempt.post_data and token not in attempt.post_data
    assert "password=********************" in attempt.post_data
