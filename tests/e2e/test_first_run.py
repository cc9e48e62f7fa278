"""First run on a real control plane (`manage.py up`, gunicorn with several workers and threads):
`up` prints the one-time code while no user exists, and browsers racing to make the first account
make exactly one."""

import re
import stat
import threading

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.harness import ControlPlane, running_control_plane
from workflows.first_account import CODE_FILE

pytestmark = pytest.mark.integration

RACERS = 8
PASSWORD = "pw-secret-first-1"
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(scope="module")
def fresh_plane(tmp_path_factory):
    """A control plane of its own, with no user at all (the session's one has users)."""
    with running_control_plane(tmp_path_factory.mktemp("first-run-home")) as plane:
        yield plane


def printed(plane: ControlPlane) -> str:
    return (plane.home / "control-plane.log").read_text()


def test_up_prints_a_one_time_code_and_racing_browsers_make_one_account(fresh_plane):
    plane = fresh_plane
    line = wait_until(
        lambda: re.search(r"No account exists yet: open (\S+) .* one-time code: (\S+)", printed(plane)),
        timeout=10,
        message="up to print the one-time code",
    )
    assert line.group(1) == plane.url + "/"
    code_file = plane.home / CODE_FILE
    assert stat.S_IMODE(code_file.stat().st_mode) == 0o600
    assert line.group(2) not in code_file.read_text().upper(), "only its digest is kept"

    # The sign-in page offers the first account instead.
    assert requests.get(plane.url + "/login/", timeout=10).url == plane.url + "/first-account/"

    # Several browsers, each with its session and form, submit at the same moment.
    racers = []
    for n in range(RACERS):
        browser = requests.Session()
        page = browser.get(plane.url + "/first-account/", timeout=10)
        assert page.status_code == 200 and "Create the first account" in page.text
        racers.append((browser, TOKEN.search(page.text).group(1), f"racer{n}"))
    start, answers = threading.Barrier(RACERS), {}

    def submit(browser, token, username):
        form = {"csrfmiddlewaretoken": token, "username": username, "password1": PASSWORD, "password2": PASSWORD}
        start.wait()
        answers[username] = browser.post(plane.url + "/first-account/", data=form, allow_redirects=False, timeout=60)

    threads = [threading.Thread(target=submit, args=racer) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert len(answers) == RACERS

    statuses = {username: (r.status_code, r.headers.get("Location")) for username, r in answers.items()}
    winners = [username for username, answer in statuses.items() if answer == (302, "/")]
    assert len(winners) == 1, statuses
    assert all(answer == (302, "/login/") for username, answer in statuses.items() if username not in winners)
    users = (
        "from django.contrib.auth.models import User; "
        "print(list(User.objects.values_list('username', 'is_staff', 'is_superuser')))"
    )
    assert plane.manage("shell", "-c", users).stdout.splitlines()[-1] == str([(winners[0], True, True)])

    # The winner is signed in; the page and the code are gone.
    winner = next(browser for browser, _, username in racers if username == winners[0])
    assert "Your services" in winner.get(plane.url + "/", timeout=10).text
    token = requests.post(
        plane.url + "/api/v1/auth/token/", json={"username": winners[0], "password": PASSWORD}, timeout=10
    )
    assert token.status_code == 200
    assert requests.get(plane.url + "/first-account/", timeout=10).url == plane.url + "/login/"
    assert not code_file.exists()
    assert PASSWORD not in printed(plane)
