"""The package proxy's web application: proxpi, answering only what a build's installer asks.

Builds fetch the index's pages and files (GET and HEAD under /index/); proxpi's other routes (its
home page, and DELETE /cache/… which empties the cache every build shares) are refused, so one
tenant's build cannot make another's slower. Run by `manage.py up` (services/package_proxy.py).
"""

from urllib.parse import urljoin

from proxpi import _cache
from proxpi import server as proxpi_server

ALLOWED_METHODS = ("GET", "HEAD")


class ProjectPageIndex(_cache._IndexCache):
    """proxpi's cache of one index, except that a project whose own page the index answers 404
    for is not found at once. proxpi would first list every project of the index to be sure
    (PyPI's list: some 700,000 names, a minute and 600 MB of the proxy's memory), so a build
    whose requirement names no project failed only after that, and the next ones waited on it."""

    def _list_files(self, package_name: str):
        package = self._packages.get(package_name)
        if package is None or _cache._now() >= package.refreshed + self.ttl:  # proxpi would ask the index
            page = urljoin(self.index_url, package_name)
            if self.session.head(page, headers=self._headers, allow_redirects=True).status_code == 404:
                raise _cache.NotFound(package_name)
        super()._list_files(package_name)


class ProjectPageCache(_cache.Cache):
    _index_cache_cls = ProjectPageIndex


proxpi_server.cache = ProjectPageCache.from_config()
proxpi = proxpi_server.app


def application(environ, start_response):
    if environ.get("REQUEST_METHOD") not in ALLOWED_METHODS or not environ.get("PATH_INFO", "").startswith("/index/"):
        body = b"only GET /index/... is served here\n"
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return proxpi(environ, start_response)
