"""The package proxy's index cache (services/package_proxy_wsgi.py), on a small index of its own."""

import http.server
import threading

import pytest
import requests
from proxpi import NotFound

from services.package_proxy_wsgi import ProjectPageIndex

PROJECT_PAGE = b'<html><a href="../../files/known-1.0-py3-none-any.whl">known-1.0-py3-none-any.whl</a></html>'


class Index(http.server.BaseHTTPRequestHandler):
    """/simple/known/ and the root listing; 404 for any other project."""

    asked: list[str]

    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool):
        self.asked.append(f"{self.command} {self.path}")
        if self.path in ("/simple/known", "/simple/known/", "/simple/"):
            page = PROJECT_PAGE if "known" in self.path else b'<html><a href="known/">known</a></html>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            if body:
                self.wfile.write(page)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def index():
    Index.asked = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/simple/"
    server.shutdown()
    server.server_close()


def test_a_project_the_index_answers_404_for_is_not_found_without_listing_the_whole_index(index):
    cache = ProjectPageIndex(index, 1800, requests.Session())

    with pytest.raises(NotFound):
        cache.list_files("no-such-project")

    assert "GET /simple/" not in Index.asked, Index.asked


def test_a_project_of_the_index_is_listed_from_its_own_page(index):
    cache = ProjectPageIndex(index, 1800, requests.Session())

    files = cache.list_files("known")

    assert [file.name for file in files] == ["known-1.0-py3-none-any.whl"]
    assert "GET /simple/" not in Index.asked, Index.asked
    cache.list_files("known")  # kept: the index is not asked again within its time to live
    assert len([line for line in Index.asked if "known" in line]) == 2, Index.asked
