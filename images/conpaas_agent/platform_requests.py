"""The platform's own requests to an instance: the routers' health checks and the agent's probes.

They carry one of these User-Agents, and, unlike every request a router forwards, no
X-Forwarded-For; the runtimes' access logs leave them out (nginx, gunicorn), and the agent's log
reader drops the lines of those that a runtime cannot leave out (Tomcat) or that were written
before. Standard library only: the router's config and the runtimes share it."""

from __future__ import annotations

import re

HEALTH_CHECK = "conpaas-health-check"
PROBE = "conpaas-agent-probe"
START_PROBE = "conpaas-agent-start-probe"
USER_AGENT_PREFIX = "conpaas-"
ACCESS_LOGS = frozenset({"access.log"})

_LOGGED_USER_AGENT = re.compile(r'"(' + "|".join(map(re.escape, (HEALTH_CHECK, PROBE, START_PROBE))) + r')"')


def is_platform_line(line: str) -> bool:
    """Whether an access log line is one of the platform's requests (its quoted User-Agent)."""
    return _LOGGED_USER_AGENT.search(line) is not None


# gunicorn's logger class for an instance's access log, written beside it by the python runtime
# (gunicorn imports it by name; its own package is the app's, not the agent's).
GUNICORN_LOGGER = f'''"""Written by the ConPaaS agent: the access log without the platform's own requests."""
from gunicorn.glogging import Logger


class AccessLog(Logger):
    def access(self, resp, req, environ, request_time):
        # The request's own headers: when the app raised, gunicorn logs an environ without them.
        headers = dict(req.headers)
        platform = headers.get("USER-AGENT", "").startswith("{USER_AGENT_PREFIX}")
        if not platform or "X-FORWARDED-FOR" in headers:
            super().access(resp, req, environ, request_time)
'''
