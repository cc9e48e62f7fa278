"""The web server's access log leaves out the clients' polls of an operation, and only those."""

import datetime
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from conpaas_site.access_log import AccessLog


@pytest.fixture
def logged(tmp_path):
    path = tmp_path / "access.log"
    config = Config()
    config.set("accesslog", str(path))
    log = AccessLog(config)

    def request(method: str, path_: str, status: int) -> str:
        response = SimpleNamespace(status=f"{status} X", status_code=status, sent=2, headers=[], response_length=2)
        request_ = SimpleNamespace(method=method, path=path_, query="", uri=path_, version=(1, 1), headers=[])
        environ = {"REQUEST_METHOD": method, "RAW_URI": path_, "PATH_INFO": path_, "SERVER_PROTOCOL": "HTTP/1.1"}
        log.access(response, request_, environ, datetime.timedelta(milliseconds=3))
        for handler in log.access_log.handlers:
            handler.flush()
        return path.read_text()

    return request


def test_a_successful_poll_of_an_operation_is_not_logged(logged):
    assert logged("GET", "/api/v1/operations/12/", 200) == ""


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/operations/12/", 404),  # a failed poll says something
        ("GET", "/api/v1/operations/", 200),  # the list is not a poll
        ("GET", "/api/v1/services/12/", 200),
        ("POST", "/api/v1/operations/12/", 200),
    ],
)
def test_everything_else_is(logged, method, path, status):
    assert f'"{method} {path}' in logged(method, path, status)
