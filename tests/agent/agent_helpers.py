"""Helpers for the node agent tests (imported by conftest.py and the test modules)."""

import contextlib
import hashlib
import http.client
import http.server
import io
import json
import os
import pathlib
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

from conpaas_agent.router.config import Paths
from conpaas_agent.router.runtime_api import RuntimeAPI
from conpaas_common import client, signing
from conpaas_common.procs import free_port, group_members
from conpaas_common.waiting import wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"  # what a node runs from (boot.sh puts it on PYTHONPATH)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SECRET = "test-secret-" + "ab" * 16

WSGI_APP = """\
import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/slow":
        time.sleep(float(query.get("s", ["1"])[0]))
    if path == "/env":
        body = os.environ.get(query["name"][0], "-")
    elif path == "/serving":  # the environment the router says this request is served in
        body = environ.get("HTTP_X_CONPAAS_ENV", "-")
    else:
        body = os.environ["CONPAAS_VERSION"]
    data = (body + "\\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
"""


def make_zip(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def app_zip(extra: dict | None = None) -> bytes:
    return make_zip({"wsgi.py": WSGI_APP, **(extra or {})})


class ArchiveServer:
    """A tiny http.server serving archives from a directory, addressed by file name."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        handler = type(
            "Quiet",
            (http.server.SimpleHTTPRequestHandler,),
            {"log_message": lambda *a: None, "__init__": _directory_init(str(root))},
        )
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def add(self, name: str, data: bytes) -> tuple[str, str]:
        (self.root / name).write_bytes(data)
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}", hashlib.sha256(data).hexdigest()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _directory_init(directory):
    def __init__(self, *args, **kwargs):
        http.server.SimpleHTTPRequestHandler.__init__(self, *args, directory=directory, **kwargs)

    return __init__


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body) if self.body else None

    def header(self, name):
        return self.headers.get(name)

    def headers_all(self, name):
        return self.headers.get_all(name) or []


def http_request(port, method, path, body=b"", headers=None, timeout=30) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.msg, resp.read())
    finally:
        conn.close()


class AgentProcess:
    """One agent process in its own process group (as the local cloud driver runs it)."""

    def __init__(self, home: pathlib.Path, roles, extra_env=None, user: str | None = None):
        self.home = home
        self.user = user  # run as this Unix user (Debian's python3: the agent is stdlib only)
        self.port = free_port()
        self.http_port = free_port()
        self.config_path = home / "node.json"
        self.config = {
            "name": "n-test",
            "secret": SECRET,
            "roles": roles,
            "agent_bind": f"127.0.0.1:{self.port}",
            "http_bind": f"127.0.0.1:{self.http_port}",
            "home": str(home),
        }
        home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config))
        self.config_path.chmod(0o600)
        if user:
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            self.ids = (uid, gid)
            for path in (home, self.config_path):
                os.chown(path, uid, gid)
        self.extra_env = extra_env or {}
        self.process = None
        self.pgid = None

    def start(self):
        env = {**os.environ, "PYTHONPATH": str(IMAGES), "CONPAAS_HAPROXY": HAPROXY, **self.extra_env}
        log = open(self.home / "agent.stderr", "ab")
        argv = [sys.executable, "-m", "conpaas_agent", str(self.config_path)]
        if self.user:
            uid, gid = self.ids
            argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", *argv[1:]]
            env["HOME"] = str(self.home)
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=log,
            process_group=self.pgid or 0,  # a restart joins the node's existing group
        )
        log.close()
        if self.pgid is None:
            self.pgid = self.process.pid

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited: {(self.home / 'agent.stderr').read_text()[-2000:]}")
            try:
                return self.call("GET", "/v1/status").status == 200
            except OSError:
                return False

        wait_until(up, 20, message="the agent to answer")
        return self

    def stop_agent_only(self):
        """SIGTERM the agent process alone; HAProxy and instances keep running."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(15)

    def destroy(self):
        """Kill the whole node (agent, HAProxy, instances), as the local driver does."""
        if self.pgid is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while group_members(self.pgid) and time.monotonic() < deadline:
            if self.process.poll() is None:
                pass
            time.sleep(0.05)
        if group_members(self.pgid):
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(5)

    def call(self, method, path, body=None, secret=SECRET, timestamp=None, raw=None, headers=None) -> Response:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        if secret is not None and timestamp is not None:  # signed at another time (the clock window)
            nonce = os.urandom(8).hex()
            headers = {
                signing.TIMESTAMP_HEADER: str(timestamp),
                signing.NONCE_HEADER: nonce,
                signing.SIGNATURE_HEADER: signing.sign(secret, method, path, timestamp, data, nonce),
                **(headers or {}),
            }
            secret = None
        reply = client.call(f"http://127.0.0.1:{self.port}", secret, method, path, data, headers, timeout=120)
        return Response(reply.status, reply.headers, reply.body)

    def web(self, path="/", headers=None) -> Response:
        """A request to the node's HAProxy frontend."""
        return http_request(self.http_port, "GET", path, headers=headers)


@contextlib.contextmanager
def unprivileged_agent(roles=("backend",)):
    """An agent running as `nobody` (PostgreSQL refuses root), its home in a directory it owns;
    the node is destroyed afterwards, whatever happened."""
    root = tempfile.mkdtemp(prefix="conpaas-data-")
    os.chmod(root, 0o755)
    agent = AgentProcess(pathlib.Path(root) / "node", list(roles), user="nobody")
    try:
        yield agent.start()
    finally:
        agent.destroy()
        shutil.rmtree(root, ignore_errors=True)


def instance_body(url, sha, label, version=None, env=None, runtime="python", **fields):
    """An instance spec; a python one names the test apps' WSGI entry point, the others take
    their runtime's own fields (max_upload_mb, heap_mb)."""
    if runtime == "python":
        fields.setdefault("entry_point", "wsgi:application")
    return {
        "version": version or label,
        "label": label,
        "runtime": runtime,
        "archive_url": url,
        "archive_sha256": sha,
        "env": env or {},
        **fields,
    }


def runtime(agent: AgentProcess) -> RuntimeAPI:
    """The HAProxy runtime API of an agent's router."""
    return RuntimeAPI(Paths(str(agent.home / "haproxy")).admin_socket)
