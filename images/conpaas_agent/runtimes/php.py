"""php: nginx in front of a php-fpm pool, one pair per instance, both as the node's user.

The site runs from a copy of its archive in the instance's directory (``site/``), made at its
first start: what the site writes into its own tree (a wiki's pages, uploads) stays there across
restarts of the instance and redeploys of the same version on the node.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import sys

from conpaas_common.archives import content_root

from .base import (
    InstanceError,
    Recipe,
    Run,
    answers_http,
    as_root,
    installed,
    int_field,
    private_dir,
    render,
    write_config,
)
from .nginx import start_nginx

# Apache's `deny from all` (2.2) and `Require all denied` (2.4): PHP applications protect their
# data and config folders so, and nginx reads no .htaccess.
_DENY_RE = re.compile(r"^\s*(deny\s+from\s+all|require\s+all\s+denied)\s*(#.*)?$", re.IGNORECASE)
# Sections whose directives apply to some files or requests only, not to the whole folder.
_SCOPED_RE = re.compile(r"^\s*<(/?)(files|filesmatch|limit|limitexcept|location|locationmatch)\b", re.IGNORECASE)
_FOLDER_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
MAX_HTACCESS_BYTES = 64 * 1024
# php-fpm leaves the node's process group (it calls setsid()): it runs under a keeper that stays.
KEEPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper.py")


def php_fpm() -> str:
    """Debian names php-fpm by the PHP version (php-fpm8.2); the newest installed one."""
    found = sorted(glob.glob("/usr/sbin/php-fpm[0-9]*"), key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
    return found[-1] if found else "/usr/sbin/php-fpm"


def denies_all(htaccess: str) -> bool:
    """Whether an .htaccess refuses every request to its folder (outside <Files> and the like)."""
    try:
        with open(htaccess, errors="replace") as fh:
            text = fh.read(MAX_HTACCESS_BYTES)
    except OSError:
        return False
    depth = 0
    for line in text.splitlines():
        scoped = _SCOPED_RE.match(line)
        if scoped:
            depth += -1 if scoped.group(1) else 1
        elif depth <= 0 and _DENY_RE.match(line):
            return True
    return False


def denied_locations(site: str) -> str:
    """nginx locations answering 404 for the folders whose .htaccess denies all (a wiki's data/
    and conf/), as Apache would. Fails closed: a folder nginx cannot name is refused."""
    lines = []
    for folder, _dirs, files in sorted(os.walk(site)):
        if ".htaccess" not in files or not denies_all(os.path.join(folder, ".htaccess")):
            continue
        relative = os.path.relpath(folder, site)
        if relative == ".":
            raise InstanceError("the site's top-level .htaccess denies every request: nothing could be served")
        if not _FOLDER_RE.match(relative):
            raise InstanceError(
                f"folder {relative!r} is protected by its .htaccess, but its name holds characters "
                "the web server's config cannot: use letters, digits, '.', '_' and '-'"
            )
        lines.append(f'        location ^~ "/{relative}/" {{\n            return 404;\n        }}')
    return "\n".join(lines)


class Php(Recipe):
    name = "php"
    concurrency = 5  # php-fpm's pool: pm.max_children
    unix_socket = True
    fields = frozenset({"max_upload_mb"})
    # php-fpm (its keeper, which passes the signal on) first, nginx second: nginx hands php-fpm
    # the requests. Stopped in reverse, each gracefully.
    stop_signals = (signal.SIGQUIT, signal.SIGQUIT)
    logs = ("instance.log", "access.log", "error.log", "php-fpm.log")

    def validate(self, body: dict) -> dict:
        # The platform's upload limit (CONPAAS_MAX_UPLOAD_MB), which the control plane sends.
        return {"max_upload_mb": int_field(body, "max_upload_mb", 1, 10240)}

    def build(self, version_dir: str, app: str, logfile: str, nice: int, built: str | None = None) -> dict:
        """The version's composer build is its site's vendor/ (each instance copies the site)."""
        vendor = os.path.join(content_root(app), "vendor")
        if built is not None:
            link = os.path.relpath(built, os.path.dirname(vendor))
            if os.path.islink(vendor) and os.readlink(vendor) != link:
                os.unlink(vendor)  # the version's build was made again
            if not os.path.lexists(vendor):
                os.symlink(link, vendor)
        return {}

    def start(self, run: Run) -> None:
        fpm = installed(php_fpm(), "php-fpm", self.name)
        site = self.site(run)
        # A site refused for its .htaccess is refused before php-fpm starts: stopping one that is
        # still starting could take the whole stop timeout.
        denied = denied_locations(site)
        private_dir(run.path("tmp", "php"))
        private_dir(run.path("sessions"))
        socket = run.path("php-fpm.sock")
        if os.path.exists(socket):  # left by a php-fpm that was killed
            os.unlink(socket)
        upload_mb = run.spec["max_upload_mb"]
        # The form around a file, and the other fields, need a little more than the file.
        body_mb = upload_mb + 1
        values = {
            "dir": run.dir,
            "socket": socket,
            "upload_mb": upload_mb,
            "body_mb": body_mb,
            "max_children": self.concurrency,
        }
        root = as_root()
        user = "user = root\ngroup = root\n" if root else ""
        config = write_config(run.path("php-fpm.conf"), render("php-fpm.conf", values, {"user": user}))
        fpm_argv = [fpm, "--nodaemonize", "--fpm-config", config, *(["--allow-to-run-as-root"] if root else [])]
        run.spawn([sys.executable, KEEPER, *fpm_argv])
        start_nginx(
            run,
            self.name,
            "nginx-php.conf",
            {"site": site, "socket": socket, "body_mb": body_mb, "node_address": run.host},
            {"denied": denied},
        )

    def ready(self, run: Run) -> bool:
        # nginx answers (502) before php-fpm listens: wait for both.
        return os.path.exists(run.path("php-fpm.sock")) and answers_http(run.host, run.port)

    @staticmethod
    def site(run: Run) -> str:
        """The instance's own copy of the site, made once per version (marked with its sha256)."""
        site, mark = run.path("site"), run.path("site.sha256")
        sha = run.spec["archive_sha256"] + run.spec.get("build_sha256", "")  # its vendor/ is its build
        try:
            with open(mark) as fh:
                if fh.read().strip() == sha and os.path.isdir(site):
                    return site
        except OSError:
            pass
        fresh = run.path("site.new")
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(content_root(run.app), fresh)
        shutil.rmtree(site, ignore_errors=True)
        os.replace(fresh, site)
        with open(mark, "w") as fh:
            fh.write(sha + "\n")
        return site
