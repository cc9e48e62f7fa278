import http.server
import json
import os
import re
import signal
import subprocess
import threading

import pytest

from conpaas_agent.router.config import (
    CHECK_OPTIONS,
    CONSOLE_COOKIE_PASSES,
    Paths,
    check_passes,
    render_config,
    render_map,
)
from conpaas_agent.router.health import probe
from conpaas_agent.router.runtime_api import (
    MAX_REQUEST_CHARS,
    HAProxyError,
    RuntimeAPI,
    parse_servers_state,
    server_healthy,
)
from conpaas_agent.router.validation import InvalidRouting, validate_routing
from conpaas_common.procs import pid_alive
from conpaas_common.waiting import wait_until
from tests.agent.agent_helpers import HAPROXY, app_zip, http_request, instance_body, make_zip, runtime

# --- units: rendering and validation -----------------------------------------------------


def test_it_renders_a_config_haproxy_accepts(tmp_path):
    paths = Paths(str(tmp_path))
    for name in ("keys.map", "envs.map"):
        (tmp_path / name).write_text("")
    servers = [
        {"name": "i1", "address": "127.0.0.1", "port": 4000},
        {"name": "i2", "address": "127.0.0.1", "port": 4001, "maxconn": 2},
    ]
    config = render_config(paths, "127.0.0.1:8080", 8, {"slot1": servers}, "/health?x=1")
    (tmp_path / "haproxy.cfg").write_text(config)
    result = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backend slot7" in config and "backend slot8" not in config
    assert f"server i1 127.0.0.1:4000 {CHECK_OPTIONS}\n" in config
    assert f"server i2 127.0.0.1:4001 {CHECK_OPTIONS} maxconn 2\n" in config
    assert "option httpchk GET /health?x=1" in config


def test_it_renders_sorted_maps():
    assert render_map({"production": "slot1", "development": "slot0"}) == ("development slot0\nproduction slot1\n")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"routes": {"production": "9"}}, "not in backends"),
        ({"backends": {"1": [{"name": "a b", "address": "127.0.0.1", "port": 1}]}}, "server name"),
        ({"backends": {"1": [{"name": "a", "address": "127.0.0.1", "port": 0}]}}, "invalid port"),
        ({"backends": {"1": [{"name": "a", "address": "1.2.3.4 backup", "port": 1}]}}, "invalid address"),
        ({"backends": {"1": [{"name": "a", "address": "127.0.0.1", "port": 1, "maxconn": 0}]}}, "maxconn"),
        ({"backends": {"1": [{"name": "a", "address": "127.0.0.1", "port": 1, "maxconn": "2"}]}}, "maxconn"),
        ({"backends": {"1": [{"name": "a", "address": "127.0.0.1", "port": 1, "maxconn": True}]}}, "maxconn"),
        ({"preview_keys": {"bad key": "development"}}, "preview key"),
        ({"preview_keys": {"k": "dev\nx"}}, "environment name"),
        ({"health_path": "/ x"}, "health_path"),
        ({"drain_timeout": -1}, "drain_timeout"),
        ({"surprise": 1}, "unknown field"),
    ],
)
def test_it_refuses_malformed_routing(body, message):
    with pytest.raises(InvalidRouting, match=message):
        validate_routing(body)


@pytest.mark.parametrize(
    "row, healthy",
    [
        ({"status": "UP", "check_status": "L7OK"}, True),
        ({"status": "UP", "check_status": "* L7OK"}, True),  # a check under way: its last one passed
        ({"status": "UP", "check_status": "* L4CON"}, False),
        ({"status": "UP", "check_status": "INI"}, False),  # up, but never checked yet
        ({"status": "DOWN", "check_status": "L7STS"}, False),
        ({"status": "MAINT", "check_status": "L7OK"}, False),
        ({}, False),
    ],
)
def test_it_gives_one_health_verdict_per_server(row, healthy):
    assert server_healthy(row) is healthy


def test_it_parses_servers_state():
    text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state\n4 slot0 1 i1 127.0.0.1 2\n"
    assert parse_servers_state(text)[("slot0", "i1")]["srv_addr"] == "127.0.0.1"


# --- end to end: a real agent, real HAProxy, real gunicorn --------------------------------


def map_version(agent, name):
    listing = runtime(agent).execute("show map")
    line = next(line for line in listing.splitlines() if f"/{name})" in line)
    return int(re.search(r"curr_ver=(\d+)", line).group(1))


def start_versions(agent, archives, labels=("v1", "v2")):
    """One instance per label, each from its own archive; returns {label: port}."""
    ports = {}
    for label in labels:
        url, sha = archives.add(f"proxy-{label}.zip", app_zip({"VERSION": label}))
        resp = agent.call("PUT", f"/v1/instances/i-{label}", instance_body(url, sha, label))
        assert resp.status == 200, resp.body
        ports[label] = resp.json()["port"]
    return ports


def routing(ports, routes, preview_keys=None, drain_timeout=10):
    return {
        "health_path": "/",
        "backends": {
            label[1:]: [{"name": f"n-test-i{label[1:]}", "address": "127.0.0.1", "port": port}]
            for label, port in ports.items()
        },
        "routes": routes,
        "preview_keys": preview_keys or {},
        "drain_timeout": drain_timeout,
    }


def served(agent, path="/", headers=None):
    resp = agent.web(path, headers)
    assert resp.status == 200, (resp.status, resp.body)
    return resp.body.decode().strip()


@pytest.mark.integration
def test_it_routes_by_preview_key_and_swaps_atomically(start_agent, archives):
    agent = start_agent()
    no_version = agent.web("/")
    assert no_version.status == 503 and b"No code version" in no_version.body

    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    resp = agent.call("PUT", "/v1/proxy", desired)
    assert resp.status == 200, resp.body
    status = resp.json()
    assert status["routes"] == {"production": "1", "development": "2"}
    # The control plane's health gate reads the agent's verdict; the raw values explain it.
    server = status["backends"]["1"]["servers"]["n-test-i1"]
    assert server["healthy"] is True
    assert (server["status"], server["check"], server["check_code"]) == ("UP", "L7OK", 200)
    worker = runtime(agent).worker_pid()

    # No key: production, and nothing says which environment served it.
    plain = agent.web("/")
    assert plain.body == b"v1\n" and plain.header("X-Conpaas-Env") is None
    assert plain.headers_all("Set-Cookie") == []
    # Header.
    preview = agent.web("/", {"X-Conpaas-Env": "k-dev"})
    assert preview.body == b"v2\n" and preview.header("X-Conpaas-Env") == "development"
    # Query parameter: serves the preview and sets the cookie.
    query = agent.web("/?conpaas-env=k-dev")
    assert query.body == b"v2\n"
    assert query.headers_all("Set-Cookie") == ["conpaas-env=k-dev; Path=/; HttpOnly; SameSite=Lax"]
    # The next request carries only the cookie.
    assert served(agent, "/", {"Cookie": "conpaas-env=k-dev"}) == "v2"
    # Header beats cookie; an unknown key is production, like no key at all.
    assert served(agent, "/", {"X-Conpaas-Env": "nope", "Cookie": "conpaas-env=k-dev"}) == "v1"
    unknown = agent.web("/?conpaas-env=nope")
    assert unknown.body == b"v1\n" and unknown.header("X-Conpaas-Env") is None
    assert unknown.headers_all("Set-Cookie") == ["conpaas-env=nope; Path=/; HttpOnly; SameSite=Lax"]
    # conpaas-env=production clears the cookie.
    clear = agent.web("/?conpaas-env=production", {"Cookie": "conpaas-env=k-dev"})
    assert clear.body == b"v1\n"
    assert clear.headers_all("Set-Cookie") == ["conpaas-env=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"]
    # Nothing can be injected into the cookie header.
    injected = agent.web("/?conpaas-env=k%0d%0aSet-Cookie:%20x=1")
    assert injected.headers_all("Set-Cookie") == []

    # PUT the same routing again: nothing changes, no map commit, no reload.
    envs_ver, keys_ver = map_version(agent, "envs.map"), map_version(agent, "keys.map")
    assert agent.call("PUT", "/v1/proxy", desired).status == 200
    assert (map_version(agent, "envs.map"), map_version(agent, "keys.map")) == (envs_ver, keys_ver)

    # Swap under load: one commit on envs.map, none on keys.map, no reload, no failed request.
    answers, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            resp = agent.web("/")
            answers.append((resp.status, resp.body))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        wait_until(lambda: len(answers) > 5, message="requests before the swap")
        swapped = routing(ports, {"production": "2", "development": "1"}, {"k-dev": "development"})
        assert agent.call("PUT", "/v1/proxy", swapped).json()["routes"] == {"production": "2", "development": "1"}
        swapped_at = len(answers)
        wait_until(lambda: len(answers) > swapped_at + 5, message="requests after the swap")
    finally:
        stop.set()
        loader.join(10)
    assert {status for status, _ in answers} == {200}
    assert answers[swapped_at + 1 :] and {body for _, body in answers[swapped_at + 1 :]} == {b"v2\n"}
    assert map_version(agent, "envs.map") == envs_ver + 1
    assert map_version(agent, "keys.map") == keys_ver
    assert served(agent) == "v2"
    flipped = agent.web("/", {"X-Conpaas-Env": "k-dev"})
    assert flipped.body == b"v1\n" and flipped.header("X-Conpaas-Env") == "development"
    assert runtime(agent).worker_pid() == worker
    # The files say the same as the runtime.
    assert (agent.home / "haproxy" / "envs.map").read_text() == "development slot0\nproduction slot1\n"
    assert (agent.home / "haproxy" / "keys.map").read_text() == "k-dev development\n"


COOKIE_APP = """\
import json
import os


def application(environ, start_response):
    data = json.dumps({"version": os.environ["CONPAAS_VERSION"], "cookie": environ.get("HTTP_COOKIE")}).encode()
    start_response("200 OK", [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        ("Set-Cookie", "sessionid=app; Path=/"),
        ("Set-Cookie", "conpaas_console_session=evil; Path=/"),
        ("Set-Cookie", "=conpaas_console_csrf=evil"),
        ("Set-Cookie", " conpaas_console_language=evil"),
        ("Set-Cookie", "theme=dark"),
    ])
    return [data]
"""


@pytest.mark.integration
def test_an_app_is_told_the_environment_serving_each_request_and_never_the_preview_key(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", desired).status == 200
    assert agent.web("/serving").body == b"production\n"
    assert agent.web("/serving", {"X-Conpaas-Env": "k-dev"}).body == b"development\n"
    assert agent.web("/serving", {"X-Conpaas-Env": "no-such-key"}).body == b"production\n"
    assert agent.web("/serving?conpaas-env=k-dev").body == b"development\n"
    # Swapped: v2's instance now serves production, and is told so.
    swapped = routing(ports, {"production": "2", "development": "1"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", swapped).status == 200
    assert agent.web("/").body == b"v2\n" and agent.web("/serving").body == b"production\n"


def test_the_consoles_cookies_never_reach_an_instance_nor_come_from_one(start_agent, archives):
    agent = start_agent()
    ports = {}
    for label in ("v1", "v2"):
        url, sha = archives.add(f"cookies-{label}.zip", make_zip({"wsgi.py": COOKIE_APP}))
        resp = agent.call("PUT", f"/v1/instances/i-{label}", instance_body(url, sha, label))
        assert resp.status == 200, resp.body
        ports[label] = resp.json()["port"]
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", desired).status == 200

    def received(cookie, path="/"):
        resp = agent.web(path, {"Cookie": cookie} if cookie is not None else None)
        assert resp.status == 200, (resp.status, resp.body)
        return resp.json()["version"], resp.json()["cookie"]

    console = "conpaas_console_session=s3cret; conpaas_console_csrf=t0ken"
    assert received(console) == ("v1", None), "nothing left: no Cookie header at all"
    assert received(f"a=1; {console}; b=2") == ("v1", "a=1; b=2")
    assert received(f"{console}; a=1") == ("v1", "a=1")
    assert received(f"a=1;{console.replace('; ', ';')}") == ("v1", "a=1")
    # A name that merely contains the prefix, and a value that does, are the app's.
    assert received("xconpaas_console_a=1; a=conpaas_console_b") == ("v1", "xconpaas_console_a=1; a=conpaas_console_b")
    assert received(None) == ("v1", None)
    # The routing cookie still routes, and reaches the app as before.
    assert received(f"conpaas-env=k-dev; {console}") == ("v2", "conpaas-env=k-dev")
    assert received(f"{console}; conpaas-env=k-dev; sessionid=app") == ("v2", "conpaas-env=k-dev; sessionid=app")
    # More console cookies than the passes remove: the whole header goes, never a console cookie.
    many = "; ".join(f"conpaas_console_c{n}=x; k{n}=y" for n in range(2 * CONSOLE_COOKIE_PASSES + 1))
    assert received(many) == ("v1", None)

    # The app's own cookies pass; a console cookie it sets becomes an expired harmless one.
    resp = agent.web("/?conpaas-env=k-dev")
    assert resp.json()["version"] == "v2"
    refused = "conpaas-refused=console-cookie; Path=/; Max-Age=0"
    assert resp.headers_all("Set-Cookie") == [
        "sessionid=app; Path=/",
        refused,
        refused,
        refused,
        "theme=dark",
        "conpaas-env=k-dev; Path=/; HttpOnly; SameSite=Lax",
    ]


@pytest.mark.integration
def test_a_gated_change_is_refused_when_a_server_died_since_its_last_check(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", desired).status == 200
    assert served(agent, "/", {"X-Conpaas-Env": "k-dev"}) == "v2"

    # v2's process stops; HAProxy's check (every second, two misses) still calls it UP for a while.
    assert agent.call("DELETE", "/v1/instances/i-v2").status in (200, 204)
    swapped = routing(ports, {"production": "2", "development": "1"}, {"k-dev": "development"})
    refused = agent.call("PUT", "/v1/proxy?require_healthy=2", swapped)

    assert refused.status == 409, refused.body
    assert "n-test-i2" in refused.json()["error"]
    assert served(agent) == "v1", "production still serves the version that answers"


class DyingServer(http.server.BaseHTTPRequestHandler):
    """Passes its health check, and closes every other request unanswered, as a process killed
    while serving it does; counts them in `dropped`."""

    dropped: list[str] = []

    def do_GET(self):
        if self.path != "/health":
            self.dropped.append(self.command)
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_DELETE = do_GET

    def log_message(self, *args):
        pass


class SteadyServer(DyingServer):
    def do_GET(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "7")
        self.end_headers()
        self.wfile.write(b"steady\n")

    do_POST = do_DELETE = do_GET


@pytest.mark.integration
def test_a_request_a_dying_server_drops_is_retried_on_another_only_if_it_changes_nothing(start_agent):
    agent = start_agent(roles=("proxy",))
    DyingServer.dropped.clear()
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), kind) for kind in (DyingServer, SteadyServer)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        desired = {
            **routing({}, {"production": "1"}),
            "health_path": "/health",
            "backends": {
                "1": [
                    {"name": f"n-test-{i}", "address": "127.0.0.1", "port": server.server_port, "maxconn": 2}
                    for i, server in enumerate(servers)
                ]
            },
        }
        assert agent.call("PUT", "/v1/proxy", desired).status == 200

        gets = [agent.web("/") for _ in range(10)]
        assert [(r.status, r.body) for r in gets] == [(200, b"steady\n")] * 10, "each retried on the steady server"
        assert DyingServer.dropped.count("GET") > 0, "the dying server took its share"
        changes = [http_request(agent.http_port, method, "/") for method in ("POST", "DELETE") * 5]
        assert {r.status for r in changes} == {200, 502}, "a request that may change something is not sent twice"
        statuses = [r.status for r in changes]
        assert len(DyingServer.dropped) - DyingServer.dropped.count("GET") == statuses.count(502)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the router's checks close their connections abruptly


@pytest.mark.integration
def test_a_server_that_dies_under_load_costs_no_request(start_agent):
    agent = start_agent(roles=("proxy",))
    servers = [QuietServer(("127.0.0.1", 0), SteadyServer) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    desired = {
        **routing({}, {"production": "1"}),
        "backends": {
            "1": [
                {"name": f"n-test-{i}", "address": "127.0.0.1", "port": server.server_port, "maxconn": 2}
                for i, server in enumerate(servers)
            ]
        },
    }
    answers, stop = [], threading.Event()

    def load():
        while not stop.is_set():
            try:
                answers.append(agent.web("/").status)
            except OSError as exc:
                answers.append(repr(exc))

    clients = [threading.Thread(target=load) for _ in range(4)]
    try:
        assert agent.call("PUT", "/v1/proxy", desired).status == 200
        for client in clients:
            client.start()
        wait_until(lambda: len(answers) > 100, message="requests before the kill")
        servers[1].shutdown()
        servers[1].server_close()  # refuses connections from now on, as a killed instance's port does
        killed_at = len(answers)
        wait_until(lambda: len(answers) > killed_at + 500, message="requests after the kill")
    finally:
        stop.set()
        for client in clients:
            if client.is_alive():
                client.join(15)
        for server in servers:
            server.shutdown()
            server.server_close()
    assert set(answers) == {200}, f"{len(answers) - answers.count(200)} of {len(answers)} failed"


@pytest.mark.integration
def test_it_drains_then_deletes_servers_nothing_routes_to(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", desired).status == 200

    # A request in flight on version 2 when it is retired.
    slow = {}
    thread = threading.Thread(target=lambda: slow.update(resp=agent.web("/slow?s=1.5", {"X-Conpaas-Env": "k-dev"})))
    thread.start()
    wait_until(lambda: runtime(agent).servers()[("slot1", "n-test-i2")]["scur"] == "1", message="the slow request")

    retired = routing({"v1": ports["v1"]}, {"production": "1"}, {}, drain_timeout=10)
    resp = agent.call("PUT", "/v1/proxy", retired)
    assert resp.status == 200, resp.body
    thread.join(10)
    assert slow["resp"].status == 200 and slow["resp"].body == b"v2\n"
    servers = runtime(agent).servers()
    assert ("slot1", "n-test-i2") not in servers and ("slot0", "n-test-i1") in servers
    assert set(resp.json()["backends"]) == {"1"}
    state = json.loads((agent.home / "state.json").read_text())
    assert state["proxy"]["slots"] == {"1": "slot0"}  # slot1 is free again
    assert served(agent, "/", {"X-Conpaas-Env": "k-dev"}) == "v1"
    assert "n-test-i2" not in (agent.home / "haproxy" / "haproxy.cfg").read_text()


@pytest.mark.integration
def test_it_comes_back_identical_after_a_reload_and_an_agent_restart(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    before = agent.call("PUT", "/v1/proxy", desired).json()
    api = runtime(agent)
    worker = api.worker_pid()
    servers_before = set(api.servers())

    reloaded = agent.call("POST", "/v1/proxy/reload")
    assert reloaded.status == 200, reloaded.body
    assert api.worker_pid() != worker
    assert set(api.servers()) == servers_before
    assert api.show_map(str(agent.home / "haproxy" / "envs.map")) == {"production": "slot0", "development": "slot1"}
    assert served(agent) == "v1" and served(agent, "/", {"X-Conpaas-Env": "k-dev"}) == "v2"
    assert reloaded.json()["routes"] == before["routes"]
    # The reloaded servers keep their health state (server-state file): still UP.
    assert all(
        s["status"].startswith("UP") for b in reloaded.json()["backends"].values() for s in b["servers"].values()
    )

    # The agent stops: HAProxy and the instances keep serving.
    instances_before = agent.call("GET", "/v1/status").json()["instances"]
    master = int((agent.home / "haproxy" / "haproxy.pid").read_text().split()[0])
    worker = api.worker_pid()
    agent.stop_agent_only()
    assert served(agent) == "v1"
    # A restarted agent re-adopts both.
    agent.start()
    status = agent.call("GET", "/v1/status").json()
    assert status["instances"] == instances_before
    assert int((agent.home / "haproxy" / "haproxy.pid").read_text().split()[0]) == master
    assert agent.call("PUT", "/v1/proxy", desired).status == 200
    assert api.worker_pid() == worker  # no reload
    assert served(agent, "/", {"X-Conpaas-Env": "k-dev"}) == "v2"
    # And still stops instances it did not start itself.
    pid = status["instances"]["i-v2"]["pid"]
    assert agent.call("DELETE", "/v1/instances/i-v2").status == 204
    wait_until(lambda: not pid_alive(pid), 25, message="the adopted instance to stop")


@pytest.mark.integration
def test_it_reaches_an_instance_of_its_own_node_through_its_unix_socket(start_agent, archives):
    # The backend node is the proxy node: HAProxy connects to the instance's socket, not its port.
    agent = start_agent(name="n")
    ports = start_versions(agent, archives, labels=("v1",))
    socket_path = agent.home / "instances" / "i-v1" / "http.sock"
    assert socket_path.is_socket()
    assert oct((agent.home / "instances" / "i-v1").stat().st_mode & 0o777) == "0o700"
    desired = routing(ports, {"production": "1"})
    resp = agent.call("PUT", "/v1/proxy", desired)
    assert resp.status == 200, resp.body
    assert resp.json()["backends"]["1"]["servers"]["n-test-i1"]["healthy"] is True
    api = runtime(agent)
    state = parse_servers_state(api.execute("show servers state slot0"))[("slot0", "n-test-i1")]
    assert state["srv_addr"] == "-"  # a unix socket
    assert f"server n-test-i1 {socket_path} " in (agent.home / "haproxy" / "haproxy.cfg").read_text()
    assert served(agent) == "v1"
    # The gate's own probe goes the same way, so a swap to it is allowed.
    assert agent.call("PUT", "/v1/proxy?require_healthy=1", desired).status == 200
    # A reload keeps it.
    assert agent.call("POST", "/v1/proxy/reload").status == 200
    assert served(agent) == "v1"

    # A port no instance of this node listens on (another node's): TCP.
    other = start_agent(roles=("backend",), name="other")
    url, sha = archives.add("proxy-other.zip", app_zip({"VERSION": "other"}))
    port = other.call("PUT", "/v1/instances/i-other", instance_body(url, sha, "other")).json()["port"]
    moved = routing({"v1": port}, {"production": "1"})
    moved["backends"]["1"][0]["name"] = "n-test-other"
    assert agent.call("PUT", "/v1/proxy", moved).status == 200
    state = parse_servers_state(api.execute("show servers state slot0"))[("slot0", "n-test-other")]
    assert (state["srv_addr"], state["srv_port"]) == ("127.0.0.1", str(port))
    assert served(agent) == "other"


@pytest.mark.integration
def test_a_server_moving_between_its_socket_and_a_port_is_replaced(start_agent, archives):
    agent = start_agent(name="n")
    ports = start_versions(agent, archives, labels=("v1",))
    other = start_agent(roles=("backend",), name="other")
    url, sha = archives.add("proxy-other.zip", app_zip({"VERSION": "other"}))
    port = other.call("PUT", "/v1/instances/i-other", instance_body(url, sha, "other")).json()["port"]
    api = runtime(agent)
    for target_port, address, body in (
        (ports["v1"], "-", "v1"),
        (port, "127.0.0.1", "other"),
        (ports["v1"], "-", "v1"),
    ):
        resp = agent.call("PUT", "/v1/proxy", routing({"v1": target_port}, {"production": "1"}, drain_timeout=1))
        assert resp.status == 200, resp.body
        assert (
            parse_servers_state(api.execute("show servers state slot0"))[("slot0", "n-test-i1")]["srv_addr"] == address
        )
        wait_until(lambda: agent.web("/").status == 200, 10, message="the server to pass its check")
        assert served(agent) == body


@pytest.mark.integration
def test_it_grows_the_slots_when_they_run_out(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives, labels=("v1",))
    backends = {str(n): [{"name": f"s{n}", "address": "127.0.0.1", "port": ports["v1"]}] for n in range(10)}
    resp = agent.call("PUT", "/v1/proxy", {"backends": backends, "routes": {"production": "9"}})
    assert resp.status == 200, resp.body
    assert resp.json()["backends"]["9"]["slot"] == "slot9"
    assert "backend slot15" in (agent.home / "haproxy" / "haproxy.cfg").read_text()
    assert served(agent) == "v1"
    assert len(runtime(agent).servers()) == 10


def test_it_computes_rates_and_percentiles_from_the_request_log(tmp_path):
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"))
    for ms in range(1, 101):  # 1..100 ms, the 100th a server error
        request_log.record_line(
            f"<134>Nov 24 10:00:00 haproxy[1]: conpaas slot0 {ms} {500 if ms == 100 else 200}", 1000.0
        )
    request_log.record_line("<134>haproxy[1]: some other line", 1000.0)
    request_log.record_line("<134>haproxy[1]: conpaas slot1 7 200", 900.0)  # outside the window
    summary = request_log.summary(window=60, now=1010.0)
    assert set(summary) == {"slot0"}
    assert summary["slot0"]["requests"] == 100
    assert summary["slot0"]["p50_ms"] == 50 and summary["slot0"]["p95_ms"] == 95
    assert summary["slot0"]["error_rate"] == 0.01
    assert summary["slot0"]["request_rate"] == round(100 / 60, 3)


def test_sampled_log_lines_count_for_the_requests_they_stand_for(tmp_path):
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)  # no counters: scale
    for ms in (10, 20, 30, 40):
        request_log.record_line(f"<134>haproxy[1]: conpaas slot0 {ms} {500 if ms == 40 else 200}", 1000.0)
    summary = request_log.summary(window=60, now=1010.0)["slot0"]
    assert summary["requests"] == 32 and summary["error_rate"] == 0.25
    assert summary["p50_ms"] == 20 and summary["p95_ms"] == 40


def stat_rows(**backends):
    return [
        {"pxname": name, "svname": "BACKEND", "req_tot": str(n), "hrsp_5xx": str(e)}
        for name, (n, e) in backends.items()
    ]


def test_it_counts_requests_from_haproxy_counters_across_reloads(tmp_path):
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)
    fresh = {"Pid": "100", "Uptime_sec": "0"}
    request_log.record_counters(fresh, stat_rows(slot0=(0, 0)), 1000.0)
    request_log.record_counters(fresh, stat_rows(slot0=(40, 2), slot8=(0, 0)), 1010.0)
    request_log.record_counters(fresh, stat_rows(slot0=(100, 2), slot8=(5, 0)), 1050.0)
    # A reload: a new worker whose counters start from zero again.
    request_log.record_counters({"Pid": "200", "Uptime_sec": "0"}, stat_rows(slot0=(30, 3), slot8=(0, 0)), 1060.0)
    request_log.record_line("<134>haproxy[1]: conpaas slot0 12 200", 1055.0)  # only for the percentiles
    request_log.record_line("<134>haproxy[1]: conpaas slot0 30 200", 1055.0)
    summary = request_log.summary(window=60, now=1060.0)
    assert summary["slot0"]["requests"] == 130  # counted, not 2 sampled lines x 8
    assert summary["slot0"]["request_rate"] == round(130 / 60, 3)
    assert summary["slot0"]["error_rate"] == round(5 / 130, 4)
    assert summary["slot0"]["p50_ms"] == 12 and summary["slot0"]["p95_ms"] == 30
    # Requests in the window but none of them sampled: no percentiles (null), not 0.
    assert summary["slot8"]["requests"] == 5 and summary["slot8"]["p50_ms"] is None
    assert summary["slot8"]["p95_ms"] is None
    # Its history covers 50 s of the 60 (first seen at 1010): the rate is over those 50 s.
    assert summary["slot8"]["request_rate"] == 0.1
    later = request_log.summary(window=15, now=1060.0)["slot0"]
    # From the first point inside the window (1050), not the last one before it (1010): the
    # 30 requests of the last 10 s, at 3 a second.
    assert later["requests"] == 30 and later["request_rate"] == 3.0


def test_it_counts_arrivals_and_answers_served_apart_from_requests_sent_to_a_server(tmp_path):
    """Under a router queue req_tot counts a request when a server takes it: the backend's stot
    counts it when it arrives, and the sampled log lines count the answers instances gave."""
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)
    fresh = {"Pid": "100", "Uptime_sec": "0"}

    def rows(requests, errors, arrivals):
        return [{"pxname": "slot0", "svname": "BACKEND", "req_tot": requests, "hrsp_5xx": errors, "stot": arrivals}]

    request_log.record_counters(fresh, rows("0", "0", "0"), 1000.0)
    request_log.record_counters(fresh, rows("100", "20", "300"), 1010.0)
    for _ in range(10):
        request_log.record_line("<134>haproxy[1]: conpaas slot0 900 200", 1005.0)
    for status in (503, 504, -1):  # a queue timeout, a server timeout, a client that left: none served
        request_log.record_line(f"<134>haproxy[1]: conpaas slot0 3000 {status}", 1006.0)
    summary = request_log.summary(window=10, now=1010.0)["slot0"]
    assert summary["request_rate"] == 10.0 and summary["arrival_rate"] == 30.0
    assert summary["served_rate"] == 8.0  # 10 sampled answers x 8, over 10 s
    # Without stot (older HAProxy rows), arrivals are the requests.
    request_log.record_counters(fresh, stat_rows(slot1=(0, 0)), 1000.0)
    request_log.record_counters(fresh, stat_rows(slot1=(50, 0)), 1010.0)
    assert request_log.summary(window=10, now=1010.0)["slot1"]["arrival_rate"] == 5.0


def test_the_rate_is_over_the_time_the_counters_cover(tmp_path):
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)
    fresh = {"Pid": "100", "Uptime_sec": "0"}
    for second in range(31):  # the agent started 30 s ago: 2 requests a second since
        request_log.record_counters(fresh, stat_rows(slot0=(2 * second, 0)), 1030.0 + second)
    summary = request_log.summary(window=60, now=1060.0)["slot0"]
    assert summary["requests"] == 60 and summary["request_rate"] == 2.0  # not 60 / 60
    # A window that starts between two polls: from the first poll inside it.
    summary = request_log.summary(window=9.5, now=1060.0)["slot0"]
    assert summary["requests"] == 18 and summary["request_rate"] == 2.0


def test_it_keeps_counter_history_for_the_longest_window_in_bounded_memory(tmp_path):
    from conpaas_agent import metrics

    request_log = metrics.RequestLog(str(tmp_path / "requests.sock"), sample=8)
    fresh = {"Pid": "100", "Uptime_sec": "0"}
    for minute in range(61):  # one request a second for an hour
        request_log.record_counters(fresh, stat_rows(slot0=(60 * minute, 0)), 1000.0 + 60 * minute)
    summary = request_log.summary(window=3600, now=4600.0)["slot0"]
    assert summary["requests"] == 3600 and summary["request_rate"] == 1.0
    # Polled ten times a second (queries poll too): still about one point a second.
    for tenth in range(1, 1001):
        request_log.record_counters(fresh, stat_rows(slot0=(3600 + tenth, 0)), 4600.0 + tenth / 10)
    history = request_log.counters.history["slot0"]
    assert len(history) <= 61 + 2 * 100 + 2
    assert request_log.summary(window=100, now=4700.0)["slot0"]["request_rate"] == 10.0
    # And never more than the longest window back.
    for second in range(1, 2 * metrics.KEEP_SECONDS):
        request_log.record_counters(fresh, stat_rows(slot0=(4600, 0)), 4700.0 + second)
    assert len(history) <= metrics.KEEP_SECONDS / metrics.MIN_POINT_GAP + 2


def test_an_aborted_request_is_not_an_error(tmp_path):
    """One definition of an error for the counters (hrsp_5xx) and the log: a 5xx answer."""
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)  # no counters: the log
    for status in (200, -1, 503, 200):  # -1: the client left before any answer
        request_log.record_line(f"<134>haproxy[1]: conpaas slot0 10 {status}", 1000.0)
    assert request_log.summary(window=60, now=1010.0)["slot0"]["error_rate"] == 0.25


def test_a_reused_slot_reports_only_its_new_version(tmp_path):
    import time

    from conpaas_agent.router.proxy import Proxy

    proxy = Proxy(str(tmp_path / "node"), "127.0.0.1:0", {"slots": {"1": "slot0"}}, save=lambda: None)
    request_log = proxy.request_log
    fresh = {"Pid": "100", "Uptime_sec": "0"}
    now = time.monotonic()
    request_log.record_counters(fresh, stat_rows(slot0=(0, 0)), now - 50)
    request_log.record_counters(fresh, stat_rows(slot0=(100, 50)), now - 10)
    request_log.record_line("<134>haproxy[1]: conpaas slot0 900 500", now - 20)
    assert request_log.summary(window=60, now=now)["slot0"]["requests"] == 100

    # Version 1 is retired (its slot freed), version 2 takes its slot.
    del proxy.slots["1"]
    proxy._assign_slots({"backends": {"2": [{"name": "n", "address": "127.0.0.1", "port": 1}]}})
    assert proxy.slots == {"2": "slot0"}
    assert request_log.summary(window=60, now=time.monotonic()) == {}
    request_log.record_counters(fresh, stat_rows(slot0=(104, 51)), time.monotonic())
    request_log.record_line("<134>haproxy[1]: conpaas slot0 7 200", time.monotonic())
    summary = request_log.summary(window=60, now=time.monotonic())["slot0"]
    assert summary["requests"] == 4 and summary["error_rate"] == 0.25
    assert summary["p50_ms"] == 7 and summary["p95_ms"] == 7


class FakeAdminSocket:
    """An admin socket whose answers follow a script, one step per connection (a reload can
    come between any two connections)."""

    def __init__(self, path, steps):
        import socketserver

        self.steps, self.connections = steps, 0
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                pid, requests = fake.steps[min(fake.connections, len(fake.steps) - 1)]
                fake.connections += 1
                out = []
                for command in self.rfile.readline().decode().strip().split(";"):
                    if command == "show info":
                        out.append(f"Name: HAProxy\nPid: {pid}\nUptime_sec: 0\n\n")
                    elif command == "show stat":
                        out.append(f"# pxname,svname,req_tot,hrsp_5xx\nslot0,BACKEND,{requests},0\n\n")
                    else:
                        out.append("Unknown command.\n\n")
                self.wfile.write("".join(out).encode())

        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.server = socketserver.UnixStreamServer(path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_reload_between_show_info_and_show_stat_counts_nothing_twice(tmp_path):
    from conpaas_agent.router.proxy import Proxy

    proxy = Proxy(str(tmp_path / "n"), "127.0.0.1:0", None, save=lambda: None)
    # Worker 100 at 100 requests; a reload; worker 200 serves 5, then 7 requests.
    fake = FakeAdminSocket(proxy.paths.admin_socket, [(100, 100)] * 3 + [(200, 5), (200, 7), (200, 7)])
    try:
        now = 1000.0
        while fake.connections < 6:
            assert proxy.request_log.poll(now)
            now += 1
    finally:
        fake.close()
    assert proxy.request_log.summary(window=3600, now=now)["slot0"]["requests"] == 100 + 7


def test_requests_before_the_agent_adopted_haproxy_are_not_counted(tmp_path):
    from conpaas_agent.metrics import RequestLog

    request_log = RequestLog(str(tmp_path / "requests.sock"), sample=8)
    running = {"Pid": "100", "Uptime_sec": "3600"}
    request_log.record_counters(running, stat_rows(slot0=(5000, 7)), 1000.0)
    assert request_log.summary(window=60, now=1001.0) == {}
    request_log.record_counters(running, stat_rows(slot0=(5020, 7)), 1002.0)
    assert request_log.summary(window=60, now=1002.0)["slot0"]["requests"] == 20


@pytest.mark.integration
def test_it_reports_request_metrics_per_environment(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    desired = routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
    assert agent.call("PUT", "/v1/proxy", desired).status == 200
    for _ in range(30):
        served(agent)
    for _ in range(10):
        served(agent, "/", {"X-Conpaas-Env": "k-dev"})

    def counted():
        figures = agent.call("GET", "/v1/proxy/metrics?window=60").json()["environments"]
        return figures if figures["production"]["requests"] == 30 and figures["development"]["requests"] == 10 else None

    figures = wait_until(counted, message="the request log to count every request")
    production = figures["production"]
    assert production["version"] == "1" and production["error_rate"] == 0.0
    assert 0 <= production["p50_ms"] <= production["p95_ms"] < 1000
    assert production["live_connections"] == 0


@pytest.mark.integration
def test_a_new_version_in_a_reused_slot_starts_with_fresh_metrics(start_agent, archives):
    agent = start_agent()
    ports = start_versions(agent, archives)
    assert (
        agent.call(
            "PUT", "/v1/proxy", routing(ports, {"production": "1", "development": "2"}, {"k-dev": "development"})
        ).status
        == 200
    )
    for _ in range(10):
        served(agent, "/", {"X-Conpaas-Env": "k-dev"})

    def development(requests):
        figures = agent.call("GET", "/v1/proxy/metrics?window=60").json()["environments"]["development"]
        return figures if figures["requests"] == requests else None

    wait_until(lambda: development(10), message="version 2's requests to be counted")
    # Version 2 retired (slot1 freed), then version 3 deployed: it takes slot1.
    assert agent.call("PUT", "/v1/proxy", routing({"v1": ports["v1"]}, {"production": "1"})).status == 200
    ports.update(start_versions(agent, archives, labels=("v3",)))
    del ports["v2"]
    resp = agent.call(
        "PUT", "/v1/proxy", routing(ports, {"production": "1", "development": "3"}, {"k-dev": "development"})
    )
    assert resp.status == 200 and resp.json()["backends"]["3"]["slot"] == "slot1"
    fresh = development(0)
    assert fresh is not None and fresh["version"] == "3" and fresh["p50_ms"] is None
    for _ in range(3):
        assert served(agent, "/", {"X-Conpaas-Env": "k-dev"}) == "v3"
    figures = wait_until(lambda: development(3), message="version 3's requests to be counted")
    assert figures["error_rate"] == 0.0


# --- the health check's expected status ----------------------------------------------------


class StatusServer(SteadyServer):
    """Answers /health with the class's `status`, so a test can move a server's answer."""

    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_it_renders_the_expected_status_or_the_default_rule(tmp_path):
    paths = Paths(str(tmp_path))
    for name in ("keys.map", "envs.map"):
        (tmp_path / name).write_text("")
    expecting = render_config(paths, "127.0.0.1:8080", 1, {}, "/healthz", 204)
    (tmp_path / "haproxy.cfg").write_text(expecting)
    result = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "    option httpchk GET /healthz\n" in expecting and "    http-check expect status 204\n" in expecting
    assert "rstatus" not in expecting
    default = render_config(paths, "127.0.0.1:8080", 1, {}, "/healthz")
    assert "    http-check expect ! rstatus ^5\n" in default and "expect status" not in default


@pytest.mark.parametrize(
    ("status", "expected", "passes"),
    [(200, None, True), (404, None, True), (500, None, False), (200, 200, True), (302, 200, False), (302, 302, True)],
)
def test_the_probe_and_haproxy_share_one_rule(status, expected, passes):
    assert check_passes(status, expected) is passes


def test_the_probe_expects_the_status_when_one_is_set():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StatusServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"127.0.0.1:{server.server_port}"
    try:
        StatusServer.status = 302
        assert probe(target, "/health") == ""
        assert probe(target, "/health", 200) == "HTTP 302, expected 200"
        assert probe(target, "/health", 302) == ""
    finally:
        StatusServer.status = 200
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"health_status": 404}, "health_status must be one status from 200 to 399"),
        ({"health_status": "200"}, "health_status"),
        ({"health_status": True}, "health_status"),
        ({"health_path": "/ok\n"}, "health_path"),  # a newline would end HAProxy's line
    ],
)
def test_it_refuses_a_bad_health_check(body, message):
    with pytest.raises(InvalidRouting, match=message):
        validate_routing(body)


def test_a_routing_without_a_status_expects_any_below_500():
    assert validate_routing({})["health_status"] is None
    assert validate_routing({"health_status": 204})["health_status"] == 204


@pytest.mark.integration
def test_a_changed_expected_status_rechecks_every_server(start_agent):
    agent = start_agent(roles=("proxy",))
    server = QuietServer(("127.0.0.1", 0), StatusServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    desired = {
        **routing({}, {"production": "1"}),
        "health_path": "/health",
        "backends": {"1": [{"name": "n-test-s", "address": "127.0.0.1", "port": server.server_port}]},
    }

    def healthy() -> bool:
        status = agent.call("GET", "/v1/proxy").json()
        return status["backends"]["1"]["servers"]["n-test-s"]["healthy"]

    try:
        StatusServer.status = 302  # below 500: healthy by default
        assert agent.call("PUT", "/v1/proxy", desired).status == 200
        wait_until(healthy, message="the server to pass the default check")

        resp = agent.call("PUT", "/v1/proxy", {**desired, "health_status": 200})
        assert resp.status == 200 and resp.json()["health_status"] == 200
        wait_until(lambda: not healthy(), message="the server to fail a check that expects 200")
        gated = agent.call("PUT", "/v1/proxy?require_healthy=1", {**desired, "health_status": 200})
        assert gated.status == 409, gated.body

        StatusServer.status = 200
        wait_until(healthy, message="the server to pass once it answers 200")
    finally:
        StatusServer.status = 200
        server.shutdown()
        server.server_close()


# --- the runtime API round trips of a change (a swap's fast path) --------------------------


def label_server(label: str) -> QuietServer:
    """A server that answers its label to every request (its health check too)."""

    class Labelled(SteadyServer):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(label) + 1))
            self.end_headers()
            self.wfile.write(f"{label}\n".encode())

    server = QuietServer(("127.0.0.1", 0), Labelled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def in_process_router(tmp_path):
    """A Proxy in this process with its own HAProxy, and versions 1 and 2 as servers answering
    "v1" and "v2" (their ports, as start_versions gives), and its state file writes: its runtime
    API calls can be counted."""
    from conpaas_agent.router.proxy import Proxy
    from conpaas_common.procs import free_port

    servers = [label_server("v1"), label_server("v2")]
    saves = []  # one entry per state file write
    home, bind = str(tmp_path / "node"), f"127.0.0.1:{free_port()}"
    proxy = Proxy(home, bind, None, save=lambda: saves.append(1), binary=HAPROXY)
    try:
        yield proxy, {"v1": servers[0].server_port, "v2": servers[1].server_port}, saves
    finally:
        if proxy.process is not None and proxy.process.poll() is None:
            proxy.process.terminate()  # the master stops its worker
            proxy.process.wait(15)
        if proxy.request_log.sock is not None:
            proxy.request_log.sock.close()
        for server in servers:
            server.shutdown()
            server.server_close()


def runtime_commands(proxy) -> list[str]:
    """From now on, every runtime API request this thread sends, its paths relative to the
    router's directory and map versions as @V (the request log's counter polling runs in its
    own thread and is left out)."""
    commands, caller, execute = [], threading.current_thread(), proxy.api.execute

    def counted(command):
        if threading.current_thread() is caller:
            commands.append(re.sub(r"@\d+", "@V", command.replace(proxy.paths.dir + "/", "")))
        return execute(command)

    proxy.api.execute = counted
    return commands


def routes_to(ports, production, development):
    routes = {"production": production, "development": development}
    return validate_routing(routing(ports, routes, {"k-dev": "development"}))


def serving(proxy) -> str:
    resp = http_request(int(proxy.http_bind.rpartition(":")[2]), "GET", "/")
    assert resp.status == 200, (resp.status, resp.body)
    return resp.body.decode().strip()


def started_with_both_versions(in_process_router):
    proxy, ports, _ = in_process_router
    proxy.start()
    proxy.apply(routes_to(ports, "1", "2"))

    def healthy_everywhere() -> bool:
        backends = proxy.status()["backends"].values()
        return all(server["healthy"] for backend in backends for server in backend["servers"].values())

    wait_until(healthy_everywhere, message="both versions healthy")
    return proxy, ports


def swap_commands(production_slot, development_slot):
    return [
        "show info;show stat",  # running, which worker, the servers the gate and the answer read
        "prepare map envs.map",
        f"add map @V envs.map production {production_slot};add map @V envs.map development {development_slot}",
        "commit map @V envs.map",  # only once every add answered that it succeeded
    ]


@pytest.mark.integration
def test_a_swap_takes_four_runtime_api_round_trips(in_process_router):
    proxy, ports = started_with_both_versions(in_process_router)
    assert serving(proxy) == "v1"
    saves = in_process_router[2]
    saves.clear()

    commands = runtime_commands(proxy)
    answer = proxy.apply(routes_to(ports, "2", "1"), require_healthy="2")

    # It was 12 requests, and each waits for both processes to be scheduled on a busy node.
    assert commands == swap_commands("slot1", "slot0")
    assert len(saves) == 1, "the state is written once, before the runtime changes"
    assert answer["routes"] == {"production": "2", "development": "1"}
    assert answer["backends"]["2"]["servers"]["n-test-i2"]["healthy"] is True
    assert serving(proxy) == "v2"

    commands.clear()
    proxy.apply(routes_to(ports, "2", "1"))
    assert commands == ["show info;show stat"], "the same routing again changes nothing"


def reload_through_the_agent(proxy):
    proxy.reload()


def reload_from_outside(proxy):
    worker = proxy.api.worker_pid()
    os.kill(proxy.master_pid(), signal.SIGUSR2)
    wait_until(lambda: proxy.api.worker_pid() not in (None, worker), message="a new worker")


def crash(proxy):
    worker, master = proxy.api.worker_pid(), proxy.master_pid()
    os.kill(worker, signal.SIGKILL)
    os.kill(master, signal.SIGKILL)
    proxy.process.wait(10)
    wait_until(lambda: not pid_alive(worker), message="the worker gone")


@pytest.mark.integration
@pytest.mark.parametrize("event", [reload_through_the_agent, reload_from_outside, crash])
def test_a_swap_reads_the_maps_again_after_haproxy_reloaded_or_restarted(in_process_router, event):
    proxy, ports = started_with_both_versions(in_process_router)
    event(proxy)

    commands = runtime_commands(proxy)
    proxy.apply(routes_to(ports, "2", "1"))

    # What this process committed before is forgotten: the maps are read from the new worker.
    assert "show map envs.map" in commands and "show map keys.map" in commands, commands
    assert serving(proxy) == "v2"
    commands.clear()
    proxy.apply(routes_to(ports, "1", "2"))
    assert commands == swap_commands("slot0", "slot1"), "then known again"
    assert serving(proxy) == "v1"


@pytest.mark.parametrize(
    "adds_answer",
    [
        "\nVersion number in the future, please use 'prepare map' before.\n\n",  # the second add refused
        "\n",  # one answer for two adds: one of them was not run
        "",  # no answer at all
    ],
)
def test_a_map_version_is_committed_only_when_every_add_succeeded(adds_answer):
    api = RuntimeAPI("/nonexistent")
    sent = []

    def execute(command):
        sent.append(command)
        return "New version created: 7\n\n" if command.startswith("prepare map") else adds_answer

    api.execute = execute
    with pytest.raises(HAProxyError, match="refused to fill /m.map version 7"):
        api.replace_map("/m.map", {"production": "slot1", "development": "slot0"})
    assert sent == ["prepare map /m.map", "add map @7 /m.map production slot1;add map @7 /m.map development slot0"]


def test_a_large_map_is_filled_in_requests_haproxy_reads_whole():
    api = RuntimeAPI("/nonexistent")
    sent = []

    def execute(command):
        sent.append(command)
        if command.startswith("prepare map"):
            return "New version created: 3\n\n"
        return "\n" * len(command.split(";"))

    api.execute = execute
    entries = {f"preview-key-{i:04d}": "development" for i in range(1000)}
    api.replace_map("/m.map", entries)
    fills = sent[1:-1]
    assert len(fills) > 1 and all(len(fill) <= MAX_REQUEST_CHARS for fill in fills)
    assert ";".join(fills) == ";".join(f"add map @3 /m.map {key} development" for key in entries)
    assert sent[-1] == "commit map @3 /m.map"
