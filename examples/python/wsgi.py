"""The smallest ConPaaS python app: `conpaas push SERVICE examples/python`.

Every instance gets its code version's label as an environment variable, and the router tells
each request which environment serves it (the X-Conpaas-Env request header, which follows a
swap), so the page says which of them served it (production, or a preview)."""

import os


def application(environ, start_response):
    service = os.environ.get("CONPAAS_SERVICE", "?")
    environment = environ.get("HTTP_X_CONPAAS_ENV", "?")
    version = os.environ.get("CONPAAS_VERSION", "?")
    body = f"Hello from {service}: {environment} serves version {version}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
