"""The smallest ConPaaS python app: `conpaas push SERVICE examples/python`.

Every instance gets its environment's name and its code version's label as environment
variables, so the page says which of them served it (production, or a preview)."""

import os


def application(environ, start_response):
    service = os.environ.get("CONPAAS_SERVICE", "?")
    environment = os.environ.get("CONPAAS_ENV", "?")
    version = os.environ.get("CONPAAS_VERSION", "?")
    body = f"Hello from {service}: {environment} serves version {version}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
