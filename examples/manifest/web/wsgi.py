"""The web front of the manifest example: asks the api it links (API_URL) and shows its answer.

The platform sets API_URL because the manifest says `links: [api]`; nothing in the code names
the api's address, so the api can move and be replaced without a change here."""

import json
import os
import urllib.error
import urllib.request


def application(environ, start_response):
    api = os.environ.get("API_URL")
    if not api:
        status, text = "503 Service Unavailable", "API_URL is not set: link the api in the manifest\n"
    else:
        # The front itself is healthy while the api starts or fails: it says so instead.
        try:
            with urllib.request.urlopen(api, timeout=5) as response:
                text = f"{json.load(response)['greeting']} from the api at {api}\n"
        except (OSError, ValueError, KeyError) as exc:
            text = f"the api at {api} does not answer yet ({exc})\n"
        status = "200 OK"
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
