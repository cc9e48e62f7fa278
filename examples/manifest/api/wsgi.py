"""The api of the manifest example: answers a greeting as JSON."""

import json
import os


def application(environ, start_response):
    body = json.dumps({"greeting": "hello", "served_by": os.environ.get("CONPAAS_VERSION", "?")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
