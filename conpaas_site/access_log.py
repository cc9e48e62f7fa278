"""The web server's access log without the clients' polls of a running operation.

`conpaas push` and the console ask for an operation's state until it ends; logged, those answers
were most of the platform's log. A poll that fails, and every other request, is still logged."""

import re

from gunicorn.glogging import Logger

OPERATION_POLL = re.compile(r"^/api/v1/operations/\d+/$")


class AccessLog(Logger):
    def access(self, resp, req, environ, request_time):
        if req.method == "GET" and (resp.status_code or 500) < 400 and OPERATION_POLL.match(req.path or ""):
            return
        super().access(resp, req, environ, request_time)
