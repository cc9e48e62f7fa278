"""static: files served by nginx, with caching headers (images/templates/nginx-static.conf)."""

from __future__ import annotations

import os
import signal

from conpaas_common.archives import content_root

from .base import Recipe, Run
from .nginx import start_nginx


class Static(Recipe):
    name = "static"
    concurrency = 256  # nginx serves files without blocking: half its worker_connections
    unix_socket = True
    stop_signals = (signal.SIGQUIT,)  # nginx's graceful stop: requests in flight finish
    logs = ("instance.log", "access.log", "error.log")

    def start(self, run: Run) -> None:
        # The site is the staged archive itself (nothing writes to it), reached through a link
        # of the instance's own, so no name from the archive ever appears in the config.
        site = run.path("site")
        link = run.path("site.new")
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(content_root(run.app), link)
        os.replace(link, site)
        start_nginx(run, self.name, "nginx-static.conf", {"site": site})
