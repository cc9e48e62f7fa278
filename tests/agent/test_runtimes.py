"""The php, static and java runtimes: real agents running real nginx, php-fpm and Tomcat."""

import json
import os
import signal
import time
import uuid

import pytest

from conpaas_agent import instances
from conpaas_agent.router.health import UnixHTTPConnection
from conpaas_agent.runtimes import PARTS, RECIPES, base, php
from conpaas_agent.runtimes.java import internal_proxies
from conpaas_common import archives
from conpaas_common.php_platform import PHP_EXTENSIONS, extension_name
from conpaas_common.procs import cmdline, pid_alive
from conpaas_common.waiting import wait_until
from services.choices import DATA_RUNTIMES
from tests.agent.agent_helpers import http_request, instance_body, make_zip
from tests.apps import java_label_war, static_label_site

# --- units -----------------------------------------------------------------------------------


def spec(runtime, **fields):
    return {"version": "1", "runtime": runtime, "archive_url": "http://x/a.zip", "archive_sha256": "0" * 64, **fields}


def test_every_runtime_the_control_plane_accepts_has_a_recipe():
    # Code-version runtimes take archives; data services (postgresql, mysql, redis, storage) run a
    # server instead, and a replicated one its router and sentinels too (PARTS).
    assert {name for name, recipe in RECIPES.items() if recipe.archive} == archives.RUNTIMES
    servers = set(DATA_RUNTIMES)
    assert {name for name, recipe in RECIPES.items() if not recipe.archive} == servers | PARTS


def test_each_runtime_takes_its_own_fields():
    assert instances.validate_instance(spec("php", max_upload_mb=7))["max_upload_mb"] == 7
    assert instances.validate_instance(spec("java", heap_mb=512))["heap_mb"] == 512
    # A version without a build has no build fields at all.
    assert set(instances.validate_instance(spec("static"))) == instances.COMMON_FIELDS - {"build_url", "build_sha256"}


@pytest.mark.parametrize(
    "body, message",
    [
        (spec("java"), "heap_mb is required: a whole number from 64 to 16384"),
        (spec("java", heap_mb=16), "heap_mb is required: a whole number from 64 to 16384"),
        (spec("java", heap_mb="512"), "heap_mb is required: a whole number"),
        (spec("php"), "max_upload_mb is required: a whole number from 1 to 10240"),
        (spec("php", max_upload_mb=0), "max_upload_mb is required: a whole number from 1 to 10240"),
        (spec("php", max_upload_mb=1, entry_point="wsgi:app"), "unknown field(s) for a php instance: entry_point"),
        (spec("static", heap_mb=256), "unknown field(s) for a static instance: heap_mb"),
        (spec("cobol"), "runtime 'cobol' is not supported by this agent (python, php, static, java, postgresql, "),
    ],
)
def test_it_refuses_a_field_a_runtime_does_not_take(body, message):
    with pytest.raises(instances.InstanceError) as refused:
        instances.validate_instance(body)
    assert str(refused.value).startswith(message) and refused.value.status == 400


def test_an_instance_believes_the_forwarded_headers_of_its_routers_only():
    body = spec("static", routers=["10.77.0.9", "10.77.0.9", "fd00::1"])
    assert instances.validate_instance(body)["routers"] == ["10.77.0.9", "fd00::1"]
    for routers in (["10.77.0.9;"], "10.77.0.9", ["router.example"]):
        with pytest.raises(instances.InstanceError, match="routers must be a list of at most 64 IP addresses"):
            instances.validate_instance(spec("static", routers=routers))
    # Tomcat's RemoteIpValve takes a regular expression: these addresses and no others.
    assert internal_proxies(["10.0.0.1", "fd00::1"]) == "10[.]0[.]0[.]1|fd00::1"


def test_a_config_value_that_could_bend_the_config_is_refused():
    with pytest.raises(instances.InstanceError, match="cannot hold"):
        base.render("nginx-static.conf", {"site": '/srv/x";\n location / { return 200; } #'})


@pytest.mark.parametrize(
    "text, denies",
    [
        ("Require all denied\n", True),
        ("<IfModule mod_authz_core.c>\n  Require all denied\n</IfModule>\n", True),
        ("order allow,deny\nDeny from all\n", True),
        ('<Files ~ "^\\.ht">\n  Deny from all\n</Files>\n', False),  # some files only
        ("RewriteEngine on\n", False),
    ],
)
def test_it_reads_which_folders_an_htaccess_closes(tmp_path, text, denies):
    (tmp_path / ".htaccess").write_text(text)
    assert php.denies_all(str(tmp_path / ".htaccess")) is denies


def test_a_protected_folder_nginx_cannot_name_is_refused(tmp_path):
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / ".htaccess").write_text("Require all denied\n")
    with pytest.raises(instances.InstanceError, match="'my data' is protected by its .htaccess"):
        php.denied_locations(str(tmp_path))


# --- end to end: a real agent --------------------------------------------------------------


def get(port, path="/", headers=None):
    return http_request(port, "GET", path, headers=headers)


def post_file(port, path, field, data: bytes):
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="upload.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return http_request(port, "POST", path, body=body, headers=headers)


def put(agent, archives_server, name, archive, runtime, label="v1", **fields):
    url, sha = archives_server.add(f"{uuid.uuid4().hex}.zip", archive)
    resp = agent.call("PUT", f"/v1/instances/{name}", instance_body(url, sha, label, runtime=runtime, **fields))
    assert resp.status == 200, resp.body
    return resp.json(), instance_body(url, sha, label, runtime=runtime, **fields)


def group_of(pids):
    """The instance's processes and theirs (nginx's workers, php-fpm under its keeper, its workers)."""
    return {p for pid in pids for p in [pid, *instances.descendants(pid)]}


def assert_adopted_after_an_agent_restart(agent, name, port):
    pids = agent.call("GET", "/v1/status").json()["instances"][name]["pid"]
    agent.stop_agent_only()
    assert get(port).status == 200, "an instance serves while its agent is down"
    agent.start()
    again = agent.call("GET", f"/v1/instances/{name}").json()
    assert again["pid"] == pids and again["state"] == "running" and again["health"]["ok"]


PHP_SITE = {
    # a front controller seeing the path and the query of a pretty URL
    "index.php": "<?php echo $_SERVER['REQUEST_URI'], ' ', $_GET['q'] ?? '-', ' ', getenv('GREETING'), \"\\n\";",
    "write.php": (
        "<?php file_put_contents(__DIR__ . '/data/notes.txt', $_GET['text'] . \"\\n\", FILE_APPEND); echo 'ok';"
    ),
    "read.php": "<?php echo file_get_contents(__DIR__ . '/data/notes.txt');",
    "upload.php": "<?php $f = $_FILES['f'] ?? null; echo $f ? $f['error'] . ' ' . $f['size'] : 'none';",
    "data/.htaccess": "<IfModule mod_authz_core.c>\n  Require all denied\n</IfModule>\n",
    "data/README": "the site's own data",
    "hello.html": "<p>hello</p>",
}


def php_site():
    """PHP_SITE in one folder, as `zip -r site.zip mysite/` packs it."""
    return make_zip({f"mysite/{name}": content for name, content in PHP_SITE.items()})


@pytest.mark.integration
def test_php_runs_a_front_controller_behind_nginx_and_keeps_its_data(start_agent, archives):
    agent = start_agent(roles=["backend"])
    site = php_site()  # once: a zip's members carry the time they were made
    started = time.monotonic()
    inst, body = put(agent, archives, "p1", site, "php", env={"GREETING": "hi"}, max_upload_mb=3)
    print(f"php instance answered {time.monotonic() - started:.1f} s after its PUT")
    port, first = inst["port"], agent.call("GET", "/v1/status").json()["instances"]["p1"]
    # Pretty URLs reach index.php with their path and query; files are served as they are.
    assert get(port, "/blog/2024/hello?q=1").body == b"/blog/2024/hello?q=1 1 hi\n"
    assert get(port, "/hello.html").body == b"<p>hello</p>"
    assert get(port, "/no-such-page.php").status == 404
    # What an .htaccess closes (Apache's way), and dotfiles, nginx does not serve.
    assert get(port, "/data/README").status == 404 and get(port, "/data/.htaccess").status == 404

    # The site writes to its own tree; a restart of the instance (another env) keeps it.
    assert get(port, "/write.php?text=one").body == b"ok"
    changed, _ = put(agent, archives, "p1", site, "php", env={"GREETING": "ho"}, max_upload_mb=3)
    assert changed["pid"] != first["pid"] and not pid_alive(first["pid"])
    assert get(changed["port"], "/read.php").body == b"one\n"
    assert get(changed["port"], "/x").body == b"/x - ho\n"

    # Uploads up to the limit (3 MB here; PHP's own default is 2 MB) reach the site; above, 413.
    assert get(changed["port"], "/upload.php").body == b"none"
    assert post_file(changed["port"], "/upload.php", "f", os.urandom(2_900_000)).body == b"0 2900000"
    assert post_file(changed["port"], "/upload.php", "f", os.urandom(4_500_000)).status == 413

    # Both processes run as one instance: adopted by a restarted agent, stopped together.
    assert_adopted_after_an_agent_restart(agent, "p1", changed["port"])
    status = agent.call("GET", "/v1/status").json()["instances"]["p1"]
    assert status["runtime"] == "php"
    processes = group_of(agent_state_pids(agent, "p1"))
    assert len(processes) >= 5  # php-fpm's keeper, php-fpm and its worker, nginx and its worker
    assert agent.call("DELETE", "/v1/instances/p1").status == 204
    assert not any(pid_alive(pid) for pid in processes)

    # Deployed again (the same version, the same instance name): its data is still there.
    again, _ = put(agent, archives, "p1", site, "php", env={"GREETING": "ho"}, max_upload_mb=3)
    assert again["pid"] != status["pid"]
    assert get(again["port"], "/read.php").body == b"one\n"
    names = [os.path.basename(path) for path in agent_log_files(agent, "p1")]
    assert names == ["instance.log", "access.log", "error.log", "php-fpm.log"]
    assert b"GET /read.php" in (agent.home / "instances" / "p1" / "access.log").read_bytes()


@pytest.mark.integration
def test_php_is_given_an_address_as_remote_addr_through_the_unix_socket_too(start_agent, archives):
    # A router of the instance's own node connects through the socket, where nginx knows no address
    # ("unix:"): PHP gets the node's (the router's), as by TCP. MediaWiki answers 500 without one.
    agent = start_agent(roles=["backend"])
    site = make_zip({"index.php": "<?php echo $_SERVER['REMOTE_ADDR'];"})
    inst, _ = put(agent, archives, "p5", site, "php", max_upload_mb=1)
    assert get(inst["port"], "/").body == b"127.0.0.1"  # this agent's node address
    connection = UnixHTTPConnection(str(agent.home / "instances" / "p5" / "http.sock"), timeout=5)
    try:
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"127.0.0.1"
    finally:
        connection.close()


def agent_state(agent) -> dict:
    return json.loads((agent.home / "state.json").read_text())["instances"]


def agent_state_pids(agent, name):
    return agent_state(agent)[name]["pids"]


def agent_log_files(agent, name):
    """The runtime's log allow-list, as the agent reads it from its state."""
    return instances.Instances(str(agent.home), agent_state(agent), lambda: None).log_files(name)


@pytest.mark.integration
def test_destroying_the_nodes_process_group_stops_php_fpm_too(start_agent, archives):
    # php-fpm leaves the group (setsid); its keeper stays, and takes it along.
    agent = start_agent(roles=["backend"])
    put(agent, archives, "p2", php_site(), "php", max_upload_mb=1)
    processes = group_of(agent_state_pids(agent, "p2"))
    assert any("php-fpm: master process" in cmdline(pid) for pid in processes)
    try:
        agent.destroy()  # the local cloud's way: SIGTERM to the node's process group, then SIGKILL
        wait_until(lambda: not any(pid_alive(pid) for pid in processes), 10, message="php-fpm to stop")
    finally:  # what escaped the group, should it: this test started it
        for pid in processes:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.integration
def test_php_refuses_a_site_whose_htaccess_closes_everything(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("closed.zip", make_zip({"index.php": "<?php echo 1;", ".htaccess": "Deny from all\n"}))
    resp = agent.call("PUT", "/v1/instances/c1", instance_body(url, sha, "v1", runtime="php", max_upload_mb=1))
    assert resp.status == 422 and "top-level .htaccess denies every request" in resp.json()["error"]
    assert "c1" not in agent.call("GET", "/v1/status").json()["instances"]


# The platform's PostgreSQL on this host: the test passes' server (./run).
TEST_POSTGRES = os.environ.get("CONPAAS_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432").rstrip("/")

EXTENSIONS_SITE = {
    "extensions.php": (
        "<?php header('Content-Type: application/json'); echo json_encode(["
        "'extensions' => get_loaded_extensions(),"
        "'apcu' => apcu_enabled() && apcu_store('k', 1),"
        "'opcache' => (opcache_get_status(false) ?: [])['opcache_enabled'] ?? false]);"
    ),
    # DATABASE_URL as the platform gives it to a linked service, read both ways PHP apps read it.
    "db.php": (
        "<?php $u = parse_url(getenv('DATABASE_URL'));"
        "$dsn = sprintf('host=%s port=%d dbname=%s', $u['host'], $u['port'], ltrim($u['path'], '/'));"
        "$pdo = new PDO('pgsql:' . str_replace(' ', ';', $dsn), $u['user'], $u['pass'] ?? null,"
        " [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);"
        "$pg = pg_connect($dsn . ' user=' . $u['user'] . (isset($u['pass']) ? ' password=' . $u['pass'] : ''));"
        "echo $pdo->query('SELECT 40 + 2')->fetchColumn(), ' ', pg_fetch_row(pg_query($pg, 'SELECT 6 * 7'))[0];"
    ),
}


@pytest.mark.integration
def test_php_fpm_loads_every_extension_of_the_platforms_list_and_reaches_postgresql(start_agent, archives):
    # The list uploads are checked against (php_platform) is what an instance really has.
    agent = start_agent(roles=["backend"])
    env = {"DATABASE_URL": f"{TEST_POSTGRES}/postgres"}
    inst, _ = put(agent, archives, "x1", make_zip(EXTENSIONS_SITE), "php", env=env, max_upload_mb=1)
    answer = get(inst["port"], "/extensions.php")
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    loaded = {extension_name(name) for name in body["extensions"]}
    assert PHP_EXTENSIONS <= loaded, f"php-fpm lacks {sorted(PHP_EXTENSIONS - loaded)}"
    assert body["apcu"] is True and body["opcache"] is True
    answer = get(inst["port"], "/db.php")
    assert (answer.status, answer.body) == (200, b"42 42")


@pytest.mark.integration
def test_static_serves_files_with_caching_headers(start_agent, archives):
    agent = start_agent(roles=["backend"])
    site = make_zip(
        {
            "index.html": "<h1>home</h1>",
            "docs/index.html": "<h1>docs</h1>",
            "assets/app.3f2a1b9c.js": "console.log(1)",
            "assets/app.js": "console.log(2)",
            "photo-20240101.jpg": "not a hash",
            ".env": "SECRET=1",
            "404.html": "<p>lost</p>",
        }
    )
    inst, _ = put(agent, archives, "s1", site, "static")
    port = inst["port"]
    home = get(port, "/")
    assert home.body == b"<h1>home</h1>" and home.header("Cache-Control") == "no-cache"
    assert home.header("Content-Type") == "text/html"
    hashed = get(port, "/assets/app.3f2a1b9c.js")
    assert hashed.header("Cache-Control") == "public, max-age=31536000, immutable"
    assert "javascript" in hashed.header("Content-Type")
    for path in ("/assets/app.js", "/photo-20240101.jpg"):
        assert get(port, path).header("Cache-Control") == "no-cache", path
    # A folder: its index.html, through a relative redirect (the router, not nginx, has the host).
    redirect = get(port, "/docs")
    assert redirect.status == 301 and redirect.header("Location") == "/docs/"
    assert get(port, "/docs/").body == b"<h1>docs</h1>"
    for path in ("/missing", "/assets/", "/.env", "/assets/app.0000aaaa.js"):
        missing = get(port, path)
        assert missing.status == 404 and missing.body == b"<p>lost</p>", path
        assert "immutable" not in (missing.header("Cache-Control") or ""), "a 404 is never cached for a year"
    assert get(port, "/", headers={"If-None-Match": home.header("ETag")}).status == 304
    assert_adopted_after_an_agent_restart(agent, "s1", port)
    pids = group_of(agent_state_pids(agent, "s1"))
    assert agent.call("DELETE", "/v1/instances/s1").status == 204
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.integration
def test_static_serves_the_one_folder_of_an_archive_as_the_site(start_agent, archives):
    agent = start_agent(roles=["backend"])
    inst, _ = put(agent, archives, "s2", static_label_site("v7"), "static")
    assert get(inst["port"], "/").body == b"v7\n"
    # The same site on the instance's unix socket, where a router of its own node connects.
    connection = UnixHTTPConnection(str(agent.home / "instances" / "s2" / "http.sock"), timeout=5)
    connection.request("GET", "/")
    assert connection.getresponse().read() == b"v7\n"
    connection.close()


@pytest.mark.integration
def test_java_runs_a_war_in_a_tomcat_base_of_its_own(start_agent, archives):
    agent = start_agent(roles=["backend"])
    war = java_label_war("t", pages={"hello.txt": "hello", "env.jsp": '<%= System.getenv("GREETING") %>'})
    started = time.monotonic()
    inst, body = put(agent, archives, "j1", war, "java", label="v3", env={"GREETING": "hi"}, heap_mb=128)
    print(f"java instance answered {time.monotonic() - started:.1f} s after its PUT")
    port = inst["port"]
    assert get(port, "/").body == b"v3\n"
    assert get(port, "/env.jsp").body.strip() == b"hi"
    text = get(port, "/hello.txt")
    assert text.body == b"hello" and text.header("Content-Type").startswith("text/plain")
    assert get(port, "/missing").status == 404
    # The service's heap, and a base of the instance's own.
    line = cmdline(inst["pid"])
    assert "-Xmx128m" in line and f"-Dcatalina.base={agent.home}/instances/j1/tomcat" in line
    assert (agent.home / "instances" / "j1" / "tomcat" / "conf" / "server.xml").exists()
    assert_adopted_after_an_agent_restart(agent, "j1", port)
    assert b"GET /hello.txt" in (agent.home / "instances" / "j1" / "access.log").read_bytes()
    assert agent.call("DELETE", "/v1/instances/j1").status == 204
    assert not pid_alive(inst["pid"])


@pytest.mark.integration
def test_java_answers_422_with_the_log_when_the_application_cannot_start(start_agent, archives):
    agent = start_agent(roles=["backend"])
    # Tomcat starts, and would answer 404 everywhere: the agent reads that the application failed.
    url, sha = archives.add("broken.war", make_zip({"WEB-INF/web.xml": "<web-app", "index.jsp": "hi"}))
    resp = agent.call("PUT", "/v1/instances/j2", instance_body(url, sha, "v1", runtime="java", heap_mb=128))
    assert resp.status == 422, resp.body
    error = resp.json()["error"]
    assert "the web application did not start" in error and "web.xml" in error
    assert "j2" not in agent.call("GET", "/v1/status").json()["instances"]
