import sys
from pathlib import Path

import pytest

from tests.factories import UserFactory
from tests.harness import running_control_plane
from tests.s3_store import s3_store  # noqa: F401  (a fixture: a real S3 store)

DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup"}
# Test folders whose tests, but the integration ones, start no process and share nothing but their
# own database (each xdist worker has its own): ./run tests runs them on two workers.
PARALLEL_FOLDERS = {"api", "cli", "console", "routing", "versions", "workflows"}
# Test folders whose tests, the integration ones too, start processes of their own only (agents,
# servers, stores on free ports, each in a short folder of the test's own: tests/agent/conftest.py)
# and share nothing else: on two workers too.
PARALLEL_PROCESS_FOLDERS = {"agent"}
# The parts of a whole run (./run tests): those two groups on two workers; the end-to-end tests
# (`integration`: real control planes and nodes, each test's own) on two workers too, a file per
# worker at a time (their module fixtures share a plane); then one at a time what shares the
# machine (tests/services' bridge and slots) or measures under load (marked `serial`).
PARTS = ("parallel", "e2e", "serial")
# The e2e part's longest files, longest first (from ./run tests' durations, 2026-12-08): a file goes
# to whichever worker is free, so the long ones start first and the workers end together (xdist's
# own order, most tests first, left a 2-minute file of one test to the end: 453 s, not ~380 s).
E2E_LONGEST_FIRST = (
    "e2e/test_storage.py",
    "e2e/test_mediawiki.py",
    "e2e/test_backups.py",
    "e2e/test_replication.py",
    "e2e/test_mysql.py",
    "e2e/test_blue_green.py",
    "console/test_browser.py",
    "cli/test_real_platform.py",
    "e2e/test_isolation.py",
    "e2e/test_dead_workers.py",
    "e2e/test_self_healing.py",
    "e2e/test_data_services.py",
    "e2e/test_builds.py",
)
TESTS = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.addoption(
        "--database-only",
        action="store_true",
        help="only the tests that use the control plane's database (the PostgreSQL pass of ./run tests)",
    )
    parser.addoption(
        "--part",
        type=parts_given,
        help="the tests that share nothing on several workers (pytest-xdist), the end-to-end ones (on several "
        "workers too, a file per worker), or the others, one at a time (./run tests runs the three); "
        "several, comma-separated, run together",
    )


def parts_given(value: str) -> set[str]:
    parts = set(value.split(","))
    if not parts <= set(PARTS):
        raise ValueError(f"parts are {', '.join(PARTS)}")
    return parts


def part_of(item) -> str:
    folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
    if item.get_closest_marker("serial"):
        return "serial"
    if folder in PARALLEL_PROCESS_FOLDERS:
        return "parallel"
    if item.get_closest_marker("integration"):
        return "e2e"
    return "parallel" if folder in PARALLEL_FOLDERS else "serial"


def pytest_collection_modifyitems(config, items):
    """With --database-only, leave out every test that never touches the database: the PostgreSQL
    pass checks what the database changes, not again what runs the same on any database. Tests
    behind a live server (the CLI's) check a client that speaks only the REST API, which no
    database changes; tests/api checks that API on PostgreSQL. With --part, keep the tests of
    that part."""
    database_only, part = config.getoption("--database-only"), config.getoption("--part")
    if not database_only and not part:
        return
    kept, left_out = [], []
    for item in items:
        keep = True
        if database_only:
            uses_database = item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(item.fixturenames)
            keep = bool(uses_database) and "live_server" not in item.fixturenames
        if part:
            keep = keep and part_of(item) in part
        (kept if keep else left_out).append(item)
    config.hook.pytest_deselected(items=left_out)
    if part and "e2e" in part:
        rank = {name: position for position, name in enumerate(E2E_LONGEST_FIRST)}
        kept.sort(key=lambda item: rank.get(item.path.relative_to(TESTS).as_posix(), len(rank)))  # stable
    items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def _local_nodes_network():
    """Isolated local nodes share a bridge that `manage.py down` leaves up (a deleted node's
    address must answer nothing rather than be routed off the machine): the run removes it at
    the end, unless an installation outside the tests still has nodes on it."""
    yield
    from services.clouds import LOCAL, get_cloud

    get_cloud(LOCAL).ex_remove_network()


@pytest.fixture(autouse=True)
def _isolated_archives(request, tmp_path_factory):
    """Unit tests store archives in a fresh folder, so 'nothing stored' can be checked."""
    if "django" not in sys.modules or request.node.get_closest_marker("integration"):
        yield None
        return
    settings = request.getfixturevalue("settings")
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
    settings.CONPAAS_ARCHIVES = tmp_path_factory.mktemp("archives")
    settings.CONPAAS_BUILDS = tmp_path_factory.mktemp("builds")
    # No platform backup store a developer's `manage.py up` made in ./var: tests that want one say so.
    settings.CONPAAS_BACKUP_STORE = "off"
    yield settings.CONPAAS_ARCHIVES


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    """One real control plane for every end-to-end test of the session (see tests/harness.py)."""
    with running_control_plane(tmp_path_factory.mktemp("conpaas-home")) as plane:
        yield plane


@pytest.fixture
def upload_temp_dir(settings, tmp_path):
    """An upload limit of 1 MB; every uploaded file goes to a temporary file in a folder of its own, so
    'nothing written' can be checked."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    settings.CONPAAS_MAX_UPLOAD_MB = 1
    return tmp_path


@pytest.fixture
def lockout(settings):
    """Sign-in lockouts after 3 failures (django-axes, conpaas_site/signin.py), a 10-minute
    cool-off, and a way to let it pass: the failures are moved 10 minutes back."""
    from datetime import timedelta

    from axes.models import AccessAttempt
    from django.db.models import F

    class Lockout:
        limit = 3
        cool_off = timedelta(minutes=10)

        def pass_cool_off(self):
            AccessAttempt.objects.update(attempt_time=F("attempt_time") - self.cool_off)

    settings.AXES_FAILURE_LIMIT = Lockout.limit
    settings.AXES_COOLOFF_TIME = Lockout.cool_off
    return Lockout()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """SQLite tests run on a file, as the platform does (WAL, one writer at a time), not on Django's
    shared in-memory database, whose table locks fail a concurrent request at once instead of
    waiting: the race tests (tests/api/test_races.py) need the real thing."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("database") / "test.sqlite3")
