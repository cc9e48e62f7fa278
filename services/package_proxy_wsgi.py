"""The package proxy's web application: proxpi, answering only what a build's installer asks.

Builds fetch the index's pages and files (GET and HEAD under /index/); proxpi's other routes (its
home page, and DELETE /cache/… which empties the cache every build shares) are refused, so one
tenant's build cannot make another's slower. Run by `manage.py up` (services/package_proxy.py).
"""

from proxpi.server import app as proxpi

ALLOWED_METHODS = ("GET", "HEAD")


def application(environ, start_response):
    if environ.get("REQUEST_METHOD") not in ALLOWED_METHODS or not environ.get("PATH_INFO", "").startswith("/index/"):
        body = b"only GET /index/... is served here\n"
        start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    return proxpi(environ, start_response)
