"""First run: while no user exists the console makes the first account (a staff superuser), from
this machine, or from elsewhere with the one-time code `manage.py up` prints."""

import hashlib
import logging
import stat

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from services.models import Event
from tests.factories import UserFactory
from workflows import first_account
from workflows.models import FirstAccount

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "correct-horse-battery"
ELSEWHERE = "203.0.113.7"


@pytest.fixture(autouse=True)
def home(settings, tmp_path):
    """A CONPAAS_HOME of its own: the code file is looked for there."""
    settings.CONPAAS_HOME = tmp_path
    return tmp_path


@pytest.fixture
def code(home):
    return first_account.issue_code()


def post(client: Client, code: str | None = None, address: str = "127.0.0.1", **fields):
    data = {"username": "root", "email": "", "password1": PASSWORD, "password2": PASSWORD, **fields}
    if code is not None:
        data["code"] = code
    return client.post("/first-account/", data, REMOTE_ADDR=address)


def assert_nothing_stored():
    assert not User.objects.exists()
    assert not FirstAccount.objects.exists()
    assert not Event.objects.exists()


def test_it_offers_the_first_account_instead_of_a_sign_in_page():
    client = Client()
    response = client.get("/", follow=True)
    assert response.redirect_chain == [("/login/?next=/", 302), ("/first-account/", 302)]
    page = response.content.decode()
    assert "Create the first account" in page
    assert 'name="code"' not in page, "from this machine no code is asked"
    assert 'name="password1"' in page and "at least 8 characters" in page


def test_it_makes_a_staff_superuser_from_this_machine_and_signs_it_in(caplog):
    client = Client()
    with caplog.at_level(logging.INFO, logger="conpaas"):
        response = post(client, email="root@example.org")
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get()
    assert (user.username, user.email, user.is_staff, user.is_superuser) == ("root", "root@example.org", True, True)
    assert user.check_password(PASSWORD)
    assert FirstAccount.objects.get().user == user
    assert client.get("/").status_code == 200, "signed in"
    event = Event.objects.get()
    assert event.action == "first-account" and event.actor == user
    assert event.message == "first account root (staff) made from this machine, from 127.0.0.1"
    assert "first account root" in caplog.text
    assert PASSWORD not in caplog.text and PASSWORD not in event.message


@pytest.mark.parametrize("address", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_it_takes_any_loopback_address_for_this_machine(address):
    assert post(Client(), address=address).status_code == 302
    assert User.objects.get().username == "root"


def test_it_asks_elsewhere_for_the_one_time_code(code):
    page = Client().get("/first-account/", REMOTE_ADDR=ELSEWHERE).content.decode()
    assert 'name="code"' in page
    assert "manage.py up" in page


@pytest.mark.parametrize(
    ("address", "headers"),
    [
        (ELSEWHERE, {}),
        (ELSEWHERE, {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}),
        # A reverse proxy on this machine connects from loopback; what it relays is not local.
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": ELSEWHERE}),
        ("127.0.0.1", {"HTTP_FORWARDED": f"for={ELSEWHERE}"}),
        ("127.0.0.1", {"HTTP_X_REAL_IP": ELSEWHERE}),
        ("not-an-address", {}),
    ],
)
def test_it_refuses_elsewhere_without_the_code_and_stores_nothing(code, address, headers):
    response = Client().post(
        "/first-account/",
        {"username": "mallory", "password1": PASSWORD, "password2": PASSWORD},
        REMOTE_ADDR=address,
        **headers,
    )
    assert response.status_code == 403
    page = response.content.decode()
    assert "Refused." in page and "brings no code" in page and "Nothing was stored." in page
    assert 'name="code"' in page, "the code can still be given"
    assert_nothing_stored()


def test_it_refuses_a_wrong_code_and_stores_nothing(code, caplog):
    wrong = "ABCD-EFGH-JKMN-PQRS"
    with caplog.at_level(logging.INFO, logger="conpaas"):
        response = post(Client(), code=wrong, address=ELSEWHERE)
    assert response.status_code == 403
    assert "That code is wrong." in response.content.decode()
    assert_nothing_stored()
    assert f"first account refused to {ELSEWHERE}: wrong one-time code" in caplog.text
    assert wrong not in caplog.text
    assert first_account.code_matches(code), "a wrong guess does not spend the right code"


def test_it_says_when_no_code_is_active():
    response = post(Client(), code="ABCD-EFGH-JKMN-PQRS", address=ELSEWHERE)
    assert response.status_code == 403
    assert "none is active now: restart it to get one" in response.content.decode()
    assert_nothing_stored()


def test_it_makes_the_account_elsewhere_with_the_right_code_once(code, home):
    client = Client()
    typed = code.lower().replace("-", " ")  # as someone might type it
    response = post(client, code=typed, address=ELSEWHERE)
    assert response.status_code == 302 and response["Location"] == "/"
    assert User.objects.get().is_superuser
    assert "made with the one-time code, from 203.0.113.7" in Event.objects.get().message
    assert not (home / first_account.CODE_FILE).exists(), "the code is spent"

    # The page is gone: the code cannot make a second account.
    again = post(Client(), code=code, address=ELSEWHERE, username="mallory")
    assert again.status_code == 302 and again["Location"] == "/login/"
    assert list(User.objects.values_list("username", flat=True)) == ["root"]

    # Even were every user deleted, the code stays spent.
    User.objects.all().delete()
    FirstAccount.objects.all().delete()
    Event.objects.all().delete()
    assert post(Client(), code=code, address=ELSEWHERE, username="mallory").status_code == 403
    assert_nothing_stored()


def test_the_code_dies_once_a_user_exists(code, home):
    UserFactory(username="made-by-createsuperuser")
    response = post(Client(), code=code, address=ELSEWHERE)
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert User.objects.count() == 1
    assert not (home / first_account.CODE_FILE).exists()
    assert first_account.issue_code() is None


def test_it_keeps_only_a_digest_of_the_code_readable_by_its_owner(code, home):
    path = home / first_account.CODE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = path.read_text()
    assert code.replace("-", "") not in stored.upper()
    assert stored.strip() == hashlib.sha256(code.replace("-", "").encode()).hexdigest()
    other = first_account.issue_code()
    assert other != code and first_account.code_matches(other) and not first_account.code_matches(code)


def test_the_page_is_gone_once_a_user_exists():
    UserFactory(username="carol")
    client = Client()
    for response in (client.get("/first-account/"), post(client)):
        assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/login/").status_code == 200, "the sign-in page is back"
    assert list(User.objects.values_list("username", flat=True)) == ["carol"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"password1": "short", "password2": "short"}, "This password is too short."),
        ({"username": "carolyn", "password1": "carolyn1", "password2": "carolyn1"}, "too similar to the username"),
        ({"password2": "something-else"}, "The two password fields didn’t match."),
        ({"username": "no spaces"}, "Enter a valid username."),
        ({"username": ""}, "This field is required."),
    ],
)
def test_it_shows_what_is_wrong_with_the_form_and_stores_nothing(code, fields, error):
    response = post(Client(), code=code, address=ELSEWHERE, **fields)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert_nothing_stored()
    assert first_account.code_matches(code), "a form to correct does not spend the code"


def test_the_loser_of_a_race_stores_nothing_and_is_sent_to_sign_in(monkeypatch):
    # The other request committed between this one's check and its insert.
    winner = UserFactory(username="winner")
    FirstAccount.objects.create(id=1, user=winner)
    monkeypatch.setattr(first_account, "is_open", lambda: True)
    client = Client()
    response = post(client, username="loser")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert list(User.objects.values_list("username", flat=True)) == ["winner"]
    assert FirstAccount.objects.get().user == winner
    assert not Event.objects.exists()
    monkeypatch.undo()
    page = client.get("/login/").content.decode()
    assert "Another account was made a moment ago: sign in with it." in page


def test_it_needs_the_forms_csrf_token():
    client = Client(enforce_csrf_checks=True)
    assert post(client).status_code == 403
    assert_nothing_stored()
