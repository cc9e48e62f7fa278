"""Small apps built by tests: real archives, made in memory."""

import io
import tarfile
import zipfile

WSGI_LABEL_APP = """\
import os

LABEL = os.environ.get("CONPAAS_VERSION", "?")
# A file beside the code, shared by every worker process, so one /break breaks them all.
BROKEN_FLAG = os.path.abspath(".broken")
FORWARDED = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST")


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/break":
        open(BROKEN_FLAG, "w").close()
    status = "500 Internal Server Error" if os.path.exists(BROKEN_FLAG) else "200 OK"
    body = f"{LABEL}\\n".encode()
    if environ.get("PATH_INFO") == "/forwarded":  # who the app is told sent the request
        seen = [environ.get(name, "") for name in ("REMOTE_ADDR", *FORWARDED)]
        body = ("remote={} for={} proto={} host={}\\n".format(*seen)).encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def zip_archive(files: dict[str, str | bytes]) -> bytes:
    """The same files give the same bytes: members carry a fixed time, not the clock's, which
    ticks every 2 s in a zip and made two archives of one content differ now and then."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            member = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            member.external_attr = (0o40755 << 16) | 0x10 if name.endswith("/") else 0o644 << 16
            archive.writestr(member, content, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def tar_gz_archive(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def label_app(build: str = "") -> bytes:
    """A WSGI app answering its own label; GET /break makes every later answer a 500.

    Archives with different `build` strings differ in content (and sha256), so they are
    staged apart; the same build uploaded twice is stored once."""
    return zip_archive({"wsgi.py": WSGI_LABEL_APP + f"# build {build}\n"})


WAITING_APP = """\
import time


def application(environ, start_response):
    time.sleep({seconds})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""


def waiting_app(seconds: float = 0.05) -> bytes:
    """A WSGI app bound by its workers: every request waits `seconds` (as if on a database) and
    answers "ok". An instance serves its workers / `seconds` requests a second."""
    return zip_archive({"wsgi.py": WAITING_APP.format(seconds=seconds)})


WSGI_COOKIE_ECHO_APP = """\
def application(environ, start_response):
    body = ("cookie: " + environ.get("HTTP_COOKIE", "")).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        # Its own session, under the name Django apps use, and one under the console's name.
        ("Set-Cookie", "sessionid=from-the-app; Path=/"),
        ("Set-Cookie", "conpaas_console_session=from-the-app; Path=/"),
    ])
    return [body]
"""


def cookie_echo_app() -> bytes:
    """A WSGI app answering the Cookie header it received, and setting cookies of its own."""
    return zip_archive({"wsgi.py": WSGI_COOKIE_ECHO_APP})


WSGI_PROBE_APP = """\
import json
import os
import socket
from urllib.parse import parse_qs


def attempt(action, target):
    if action == "read":
        with open(target, "rb") as fh:
            return fh.read(16).hex()
    if action == "list":
        return sorted(os.listdir(target))[:5]
    if action == "connect":
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=2):
            return "connected"
    if action == "connect-unix":
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(target)
            return "connected"
    if action == "signal":
        os.kill(int(target), 0)
        return "may signal"
    if action == "whoami":
        with open("/proc/self/cgroup") as fh:
            cgroups = fh.read()
        return {"uid": os.getuid(), "nice": os.getpriority(os.PRIO_PROCESS, 0), "cgroups": cgroups,
                "environ": sorted(os.environ)}
    raise ValueError(action)


def application(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    try:
        result = {"ok": True, "result": attempt(query.get("action"), query.get("target", ""))}
    except Exception as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    body = json.dumps(result).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
"""


def probe_app() -> bytes:
    """A WSGI app that tries what it is told (read a file, list a folder, connect, signal a
    process) and answers whether it could: tenant code probing its walls."""
    return zip_archive({"wsgi.py": WSGI_PROBE_APP})


PHP_LABEL_APP = """\
<?php
// A front controller answering its own label; GET /break makes every later answer a 500.
$broken = __DIR__ . '/.broken';
if (parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) === '/break') {
    touch($broken);
}
header('Content-Type: text/plain');
if (file_exists($broken)) {
    http_response_code(500);
}
if (parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH) === '/forwarded') {
    $seen = [];
    foreach (['REMOTE_ADDR', 'HTTP_X_FORWARDED_FOR', 'HTTP_X_FORWARDED_PROTO', 'HTTP_X_FORWARDED_HOST'] as $name) {
        $seen[] = $_SERVER[$name] ?? '';
    }
    vprintf("remote=%s for=%s proto=%s host=%s\\n", $seen);
    exit;
}
echo getenv('CONPAAS_VERSION'), "\\n";
"""

JSP_LABEL_PAGE = (
    '<%@ page contentType="text/plain; charset=UTF-8" session="false" %><%= System.getenv("CONPAAS_VERSION") + "\\n" %>'
)
JSP_FORWARDED_PAGE = (
    '<%@ page contentType="text/plain; charset=UTF-8" session="false" %>'
    'remote=<%= request.getRemoteAddr() %> for=<%= request.getHeader("X-Forwarded-For") %>'
    ' proto=<%= request.getHeader("X-Forwarded-Proto") %> host=<%= request.getHeader("X-Forwarded-Host") %>\n'
)
WEB_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0"></web-app>\n'
)


def php_label_app(build: str = "") -> bytes:
    """The PHP twin of label_app: index.php answers the version's label, /break breaks it."""
    return zip_archive({"index.php": PHP_LABEL_APP + f"// build {build}\n"})


def java_label_war(build: str = "", pages: dict[str, str | bytes] | None = None) -> bytes:
    """A WAR (a zip with WEB-INF/) whose index.jsp answers the version's label; no servlet class,
    so nothing to compile before the test: Tomcat compiles the page."""
    files = {"WEB-INF/web.xml": WEB_XML, "index.jsp": JSP_LABEL_PAGE, "forwarded.jsp": JSP_FORWARDED_PAGE}
    return zip_archive({**files, "build.txt": build, **(pages or {})})


def static_label_site(label: str) -> bytes:
    """A static site whose index.html is its label (a static site cannot read its environment)."""
    return tar_gz_archive({"site/index.html": f"{label}\n", "site/app.3f2a1b9c.js": f"// {label}\n"})


def label_archive(runtime: str, label: str) -> tuple[bytes, str]:
    """(archive, file name) of a site of `runtime` whose / answers `label` and a newline."""
    if runtime == "python":
        return label_app(label), "app.zip"
    if runtime == "php":
        return php_label_app(label), "site.zip"
    if runtime == "java":
        return java_label_war(label), "ROOT.war"
    return static_label_site(label), "site.tar.gz"
