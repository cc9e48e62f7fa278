import pytest
from rest_framework.test import APIClient

from services import tokens
from tests.factories import ServiceFactory


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {tokens.issue(user)[1]}")
    return client


@pytest.fixture
def api(alice):
    return client_for(alice)


@pytest.fixture
def service(alice):
    return ServiceFactory(owner=alice, name="shop")


class FuzzReport:
    """What tests/api/test_fuzz.py ran, for the terminal summary."""

    def __init__(self):
        self.cases = 0
        self.operations: set[str] = set()


FUZZ_REPORT = pytest.StashKey[FuzzReport]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = config.stash.get(FUZZ_REPORT, None)
    if report is not None:
        terminalreporter.write_line(
            f"schemathesis: {report.cases} cases run over {len(report.operations)} operations of the API description"
        )
