import io
import os
import signal
import tarfile
import threading
import zipfile

import pytest

from conpaas_agent import instances
from conpaas_agent.runtimes import base
from conpaas_common import archives
from conpaas_common.procs import pid_alive
from tests.agent.agent_helpers import app_zip, instance_body, make_zip
from tests.apps import tar_gz_archive

# --- units: unpacking and the WSGI application -------------------------------------------


def write(path, data):
    path.write_bytes(data)
    return str(path)


def test_it_refuses_zip_members_that_escape(tmp_path):
    for name in ("../evil.py", "/etc/evil.py", "a/../../evil.py"):
        archive = write(tmp_path / "a.zip", make_zip({name: "x"}))
        with pytest.raises(instances.InstanceError, match=r"absolute path|'\.\.' path component"):
            instances.unpack(archive, str(tmp_path / "out"))
    assert not (tmp_path / "evil.py").exists()


def test_it_refuses_zip_symlinks(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    archive = write(tmp_path / "a.zip", buf.getvalue())
    with pytest.raises(instances.InstanceError, match="symbolic link"):
        instances.unpack(archive, str(tmp_path / "out"))


def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_it_unpacks_a_tar_gz(tmp_path):
    info = tarfile.TarInfo("app/wsgi.py")
    data = b"application = None\n"
    info.size = len(data)
    archive = write(tmp_path / "a.tgz", tar_bytes([(info, data)]))
    instances.unpack(archive, str(tmp_path / "out"))
    assert (tmp_path / "out" / "app" / "wsgi.py").read_bytes() == data


def test_it_refuses_tar_links_and_escapes(tmp_path):
    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = write(tmp_path / "a.tgz", tar_bytes([(link, None)]))
    with pytest.raises(instances.InstanceError, match="link"):
        instances.unpack(archive, str(tmp_path / "out"))
    evil = tarfile.TarInfo("../evil")
    evil.size = 1
    archive = write(tmp_path / "b.tgz", tar_bytes([(evil, b"x")]))
    with pytest.raises(instances.InstanceError, match=r"absolute path|'\.\.' path component"):
        instances.unpack(archive, str(tmp_path / "out"))


def test_it_unpacks_with_the_archives_times_and_safe_permissions(tmp_path):
    def member(name, mode, data=None):
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = mode, 1_700_000_000
        if data is None:
            info.type = tarfile.DIRTYPE
        else:
            info.size = len(data)
        return info, data

    archive = write(
        tmp_path / "a.tgz",
        tar_bytes(
            [
                member("bin", 0o555),  # read-only: its files are still written
                member("bin/run", 0o6777, b"#!/bin/sh\n"),
                member("deep/er/page.php", 0o400, b"<?php"),
            ]
        ),
    )
    instances.unpack(archive, str(tmp_path / "out"))
    out = tmp_path / "out"
    assert oct(os.stat(out / "bin/run").st_mode & 0o7777) == oct(0o755)  # no setuid/setgid, no group write
    assert oct(os.stat(out / "deep/er/page.php").st_mode & 0o777) == oct(0o600)  # the owner reads and writes
    assert oct(os.stat(out / "bin").st_mode & 0o777) == oct(0o755)
    assert os.stat(out / "bin/run").st_mtime == os.stat(out / "bin").st_mtime == 1_700_000_000
    assert (out / "deep/er/page.php").read_bytes() == b"<?php"


def test_a_code_versions_files_get_times_from_their_content(tmp_path):
    """Packed archives give every file one time: a same-size edit must still change the time
    (nginx's ETag and Last-Modified), and an unchanged file keep it, on every node alike."""

    def staged(name, files):
        archive = write(tmp_path / f"{name}.tgz", tar_gz_archive(files))
        instances.unpack(archive, str(tmp_path / name), content_times=True)
        return {path: os.stat(tmp_path / name / path).st_mtime for path in files}

    v1 = staged("v1", {"index.html": b"<p>v1</p>", "logo.svg": b"<svg/>"})
    v2 = staged("v2", {"index.html": b"<p>v2</p>", "logo.svg": b"<svg/>"})
    again = staged("again", {"index.html": b"<p>v1</p>", "logo.svg": b"<svg/>"})
    assert v1["index.html"] != v2["index.html"], "a same-size edit changes the file's time"
    assert v1["logo.svg"] == v2["logo.svg"], "an unchanged file keeps its time across versions"
    assert v1 == again, "the same content gets the same times on every node"
    for when in (*v1.values(), *v2.values()):
        assert archives.CONTENT_TIME_BASE <= when < archives.CONTENT_TIME_BASE + archives.CONTENT_TIME_SPAN


def test_a_refusal_in_the_middle_stops_the_unpacking_there(tmp_path):
    good = tarfile.TarInfo("a.txt")
    good.size = 1
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    after = tarfile.TarInfo("z.txt")
    after.size = 1
    archive = write(tmp_path / "a.tgz", tar_bytes([(good, b"a"), (link, None), (after, b"z")]))
    with pytest.raises(instances.InstanceError, match="symbolic link"):
        instances.unpack(archive, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["a.txt"]  # the caller removes the folder


def test_it_stops_at_the_expanded_size(tmp_path):
    archive = write(tmp_path / "a.tgz", tar_gz_archive({"a.bin": bytes(600), "b.bin": bytes(600)}))
    with pytest.raises(instances.InstanceError, match=r"expands to more than 1000 bytes, the limit"):
        instances.unpack(archive, str(tmp_path / "out"), max_bytes=1000)
    assert sorted(os.listdir(tmp_path / "out")) == ["a.bin"]


def test_it_refuses_what_is_no_archive(tmp_path):
    archive = write(tmp_path / "a.bin", b"not an archive at all")
    with pytest.raises(instances.InstanceError, match="not a zip or tar.gz archive"):
        instances.unpack(archive, str(tmp_path / "out"))


# --- one archive rulebook: the agent runs only an entry point the control plane found ---------


def spec_body(entry_point):
    return {"version": "1", "archive_url": "http://x/a.zip", "archive_sha256": "0" * 64, "entry_point": entry_point}


@pytest.mark.parametrize(
    "procfile",
    [
        "web: gunicorn app:application\n",
        "web: gunicorn -w 4 --bind 0.0.0.0:$PORT mysite.wsgi:app\n",
        "web: site.wsgi\n",
    ],
)
def test_it_runs_the_entry_point_the_validator_found(procfile):
    modules = {"app.py": "", "mysite/__init__.py": "", "mysite/wsgi.py": "", "site/__init__.py": "", "site/wsgi.py": ""}
    info = archives.inspect_archive(io.BytesIO(make_zip({"Procfile": procfile, **modules})), "python")
    assert instances.validate_instance(spec_body(info.entry_point))["entry_point"] == info.entry_point


@pytest.mark.parametrize("procfile", ["web: hello.main:make_app()\n", "web: rm -rf / ; echo $(id)\n"])
def test_it_never_runs_what_the_validator_refuses(procfile):
    archive = io.BytesIO(make_zip({"Procfile": procfile, "hello/__init__.py": "", "hello/main.py": ""}))
    with pytest.raises(archives.ArchiveError):
        archives.inspect_archive(archive, "python")
    # The agent takes no guess from the archive: without a valid entry point it refuses the spec.
    for entry_point in ("hello.main:make_app()", "rm -rf /", "", None):
        with pytest.raises(instances.InstanceError, match="entry_point is required") as refused:
            instances.validate_instance(spec_body(entry_point))
        assert refused.value.status == 400


def test_it_gives_an_instance_an_allow_list_environment(monkeypatch):
    monkeypatch.setenv("CONPAAS_SECRET_KEY", "x")
    monkeypatch.setenv("SUPER_LEAK_API_KEY", "x")
    monkeypatch.setenv("PATH", "/control/plane/bin:/usr/bin")
    env = base.instance_environ("/n/instances/i1/home", {"PORT": "1", "CONPAAS_ENV": "production"})
    assert env == {
        "PATH": base.INSTANCE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": "/n/instances/i1/home",
        "PYTHONUNBUFFERED": "1",
        "PORT": "1",
        "CONPAAS_ENV": "production",
    }
    in_venv = base.instance_environ("/h", {}, venv="/n/versions/abc/venv")
    assert in_venv["PATH"] == f"/n/versions/abc/venv/bin:{base.INSTANCE_PATH}"


def test_a_spec_takes_a_build_url_and_its_sha256_together_or_neither():
    body = instance_body("/a", "0" * 64, "v1")
    assert "build_url" not in instances.validate_instance(body)
    built = instances.validate_instance({**body, "build_url": "/b", "build_sha256": "A" * 64})
    assert built["build_url"] == "/b" and built["build_sha256"] == "a" * 64
    for broken in ({"build_url": "/b"}, {"build_sha256": "a" * 64}, {"build_url": "/b", "build_sha256": "zz"}):
        with pytest.raises(instances.InstanceError, match="go together"):
            instances.validate_instance({**body, **broken})


# --- end to end: a real agent running real gunicorn ----------------------------------------


def get(port, path="/"):
    from tests.agent.agent_helpers import http_request

    return http_request(port, "GET", path)


@pytest.mark.integration
def test_it_runs_an_instance_and_stops_it(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("lifecycle-v1.zip", app_zip())
    body = instance_body(url, sha, "v1", version="12", env={"GREETING": "hi"})
    resp = agent.call("PUT", "/v1/instances/i1", body)
    assert resp.status == 200, resp.body
    inst = resp.json()
    assert inst["state"] == "running" and inst["version"] == "12"
    port, pid = inst["port"], inst["pid"]
    assert get(port).body == b"v1\n"
    assert get(port, "/env?name=GREETING").body == b"hi\n"
    assert get(port, "/env?name=PORT").body == f"{port}\n".encode()

    # The same body again: the same running instance.
    again = agent.call("PUT", "/v1/instances/i1", body).json()
    assert (again["pid"], again["port"]) == (pid, port)

    # A second instance of the same version shares the staged code (one download).
    second = agent.call("PUT", "/v1/instances/i2", body).json()
    assert second["port"] != port
    assert len(os.listdir(agent.home / "versions")) == 1

    shown = agent.call("GET", "/v1/instances/i1").json()
    assert shown["health"] == {"ok": True, "status": 200, "detail": "GET / answered 200"}
    status = agent.call("GET", "/v1/status").json()
    assert set(status["instances"]) == {"i1", "i2"} and status["proxy"] is None

    # The agent runs the control plane's entry_point and guesses none.
    assert agent.call("PUT", "/v1/instances/i4", {**body, "entry_point": "x; rm -rf /"}).status == 400
    assert agent.call("PUT", "/v1/instances/i4", {**body, "entry_point": ""}).status == 400

    # Another body restarts it.
    changed = agent.call("PUT", "/v1/instances/i1", {**body, "env": {"GREETING": "ho"}}).json()
    assert changed["pid"] != pid
    assert get(changed["port"], "/env?name=GREETING").body == b"ho\n"
    assert not pid_alive(pid)

    assert agent.call("DELETE", "/v1/instances/i1").status == 204
    assert not pid_alive(changed["pid"])
    assert agent.call("DELETE", "/v1/instances/i1").status == 204
    assert agent.call("GET", "/v1/instances/i1").status == 404


ENVIRON_APP = """\
import json
import os
import signal


def application(environ, start_response):
    data = json.dumps(dict(os.environ)).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
"""


@pytest.mark.integration
def test_an_instance_sees_only_its_allow_listed_environment(start_agent, archives):
    # On the local cloud the agent inherits the control plane's environment (`manage.py up`).
    leaks = {"SUPER_LEAK_API_KEY": "x", "CONPAAS_SECRET_KEY": "x", "DATABASE_URL": "postgres://u:p@h/d"}
    agent = start_agent(roles=["backend"], extra_env=leaks)
    url, sha = archives.add("environ.zip", make_zip({"wsgi.py": ENVIRON_APP}))
    env = {"CONPAAS_ENV": "production", "CONPAAS_SERVICE": "shop", "GREETING": "hi", "PORT": "1"}
    resp = agent.call("PUT", "/v1/instances/env1", instance_body(url, sha, "v7", env=env))
    assert resp.status == 200, resp.body
    port = resp.json()["port"]
    seen = get(port).json()
    assert seen.pop("SERVER_SOFTWARE").startswith("gunicorn/")  # gunicorn's own, in its workers
    home = str(agent.home / "instances" / "env1" / "home")
    assert seen == {
        "PATH": base.INSTANCE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "PYTHONUNBUFFERED": "1",
        "PORT": str(port),  # the control plane's env cannot move it
        "CONPAAS_VERSION": "v7",
        "CONPAAS_ENV": "production",
        "CONPAAS_SERVICE": "shop",
        "GREETING": "hi",
    }
    assert os.stat(home).st_mode & 0o777 == 0o700


@pytest.mark.integration
def test_it_answers_422_when_the_work_fails(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url, sha = archives.add("mismatch.zip", app_zip())
    resp = agent.call("PUT", "/v1/instances/bad", instance_body(url, "0" * 64, "v1"))
    assert resp.status == 422
    assert "sha256 mismatch" in resp.json()["error"]

    url, sha = archives.add("crash.zip", make_zip({"wsgi.py": "import no_such_module_at_all\n"}))
    resp = agent.call("PUT", "/v1/instances/crash", instance_body(url, sha, "v1"))
    assert resp.status == 422
    assert "exited at start" in resp.json()["error"]
    assert "no_such_module_at_all" in resp.json()["error"]  # the log tail

    url, sha = archives.add("escape.zip", make_zip({"../x.py": "x"}))
    resp = agent.call("PUT", "/v1/instances/esc", instance_body(url, sha, "v1"))
    assert resp.status == 422 and "'..' path component" in resp.json()["error"]

    resp = agent.call("PUT", "/v1/instances/x", {"version": "1"})
    assert resp.status == 400
    resp = agent.call("PUT", "/v1/instances/x", raw=b"{not json")
    assert resp.status == 400
    assert agent.call("GET", "/v1/proxy").status == 404  # no proxy role on this node


@pytest.mark.integration
def test_it_removes_a_version_from_the_disk_when_no_instance_uses_it(start_agent, archives):
    agent = start_agent(roles=["backend"])
    url_a, sha_a = archives.add("unused-a.zip", app_zip({"build.txt": "a"}))
    url_b, sha_b = archives.add("unused-b.zip", app_zip({"build.txt": "b"}))
    for name, url, sha in (("a1", url_a, sha_a), ("a2", url_a, sha_a), ("b1", url_b, sha_b)):
        assert agent.call("PUT", f"/v1/instances/{name}", instance_body(url, sha, name)).status == 200
    staged = agent.home / "versions"
    assert sorted(os.listdir(staged)) == sorted([sha_a, sha_b])

    assert agent.call("DELETE", "/v1/instances/a1").status == 204
    assert (staged / sha_a / "app" / "wsgi.py").exists(), "a2 still runs it"

    assert agent.call("DELETE", "/v1/instances/a2").status == 204
    assert os.listdir(staged) == [sha_b]
    assert get(agent.call("GET", "/v1/instances/b1").json()["port"]).body == b"b1\n"

    # A version whose instance failed to start is not left behind either.
    url, sha = archives.add("unused-crash.zip", make_zip({"wsgi.py": "import no_such_module_at_all\n"}))
    assert agent.call("PUT", "/v1/instances/crash", instance_body(url, sha, "v1")).status == 422
    assert os.listdir(staged) == [sha_b]


@pytest.mark.integration
def test_it_never_removes_a_version_an_instance_is_starting_from(tmp_path, archives, monkeypatch):
    """In the agent's own process, so the second start can be held while the first instance goes."""
    url, sha = archives.add("starting.zip", app_zip({"build.txt": "starting"}))
    manager = instances.Instances(str(tmp_path), None, save=lambda: None)
    answering, go_on = threading.Event(), threading.Event()
    real_answers_http = base.answers_http

    def held_answers_http(*address):  # the second instance's gunicorn runs, not yet answering
        answering.set()
        go_on.wait(30)
        return real_answers_http(*address)

    started = []  # every gunicorn this test starts, to stop by pid even if a start goes wrong
    real_popen = instances.subprocess.Popen

    def popen(*args, **kwargs):
        started.append(real_popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(instances.subprocess, "Popen", popen)
    second = []
    thread = threading.Thread(target=lambda: second.append(manager.put("i2", instance_body(url, sha, "v1"))))
    try:
        manager.put("i1", instance_body(url, sha, "v1"))
        monkeypatch.setattr(base, "answers_http", held_answers_http)
        thread.start()
        assert answering.wait(30)

        manager.delete("i1")  # the last instance running the version: i2 is only starting from it

        assert (tmp_path / "versions" / sha / "app" / "wsgi.py").exists()
        go_on.set()
        thread.join(60)
        instance, created = second[0]
        assert created and instance["state"] == "running"
        assert get(instance["port"]).body == b"v1\n"
        manager.delete("i2")
        assert os.listdir(tmp_path / "versions") == []
    finally:
        go_on.set()
        thread.join(60) if thread.is_alive() else None
        for name in list(manager.records):
            manager.delete(name)
        for process in started:
            instances.Instances._terminate(process.pid, process, signal.SIGTERM, True)


@pytest.mark.integration
def test_it_installs_the_versions_build_offline_into_a_virtualenv(start_agent, archives):
    """The control plane built the version (versions/builds.py): the node unpacks the build, a
    site directory of packages, and runs the app on it; it never runs pip."""
    app = make_zip(
        {
            "wsgi.py": (
                "import hello\n"
                "def application(environ, start_response):\n"
                "    data = hello.GREETING.encode()\n"
                "    start_response('200 OK', [('Content-Length', str(len(data)))])\n"
                "    return [data]\n"
            ),
            "requirements.txt": "hello==0.1\n",
        }
    )
    url, sha = archives.add("requirements.zip", app)
    build_url, build_sha = archives.add(
        "build.tar.gz", tar_gz_archive({"hello.py": "GREETING = 'hello from a build'\n"})
    )
    agent = start_agent(roles=["backend"])
    body = instance_body(url, sha, "v1", build_url=build_url, build_sha256=build_sha)
    resp = agent.call("PUT", "/v1/instances/req", body)
    assert resp.status == 200, resp.body
    assert get(resp.json()["port"]).body == b"hello from a build"
    assert (agent.home / "versions" / sha / f"venv-{build_sha[:16]}" / "bin" / "python").exists()
    assert agent.call("DELETE", "/v1/instances/req").status == 204
    assert not (agent.home / "versions" / sha).exists(), "the version's code and build go with its last instance"

    # Without its build the node has nothing to run it on: refused, nothing fetched from anywhere.
    resp = agent.call("PUT", "/v1/instances/req2", instance_body(url, sha, "v1"))
    assert resp.status == 400
    assert "sent no build" in resp.json()["error"]
    # A build whose bytes are not the ones named: refused.
    resp = agent.call("PUT", "/v1/instances/req3", {**body, "build_sha256": "0" * 64})
    assert resp.status == 422 and "sha256 mismatch" in resp.json()["error"]
