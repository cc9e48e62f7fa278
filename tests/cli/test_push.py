"""`conpaas push` and `versions upload DIR` against a live control plane (`server`, whose routers
say what a request would reach): pack, upload, deploy, serve."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conpaas_common.procs import free_port
from tests.apps import WSGI_LABEL_APP

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "python"
LABEL = re.compile(r"^([0-9a-f]{7,40}|\d{8}-\d{6})(-\d+)?$")  # a short commit, or the time


@pytest.fixture
def service(alice):
    return alice.create_service("cli-push")


def versions(api, service) -> dict[str, dict]:
    return {v["label"]: v for v in api.get(f"/api/v1/services/{service['id']}/versions/").json()}


def environment(api, service, name: str) -> dict:
    return api.get(f"/api/v1/services/{service['id']}/environments/{name}/").json()


def app(folder: Path, build: str) -> Path:
    """A folder holding the label app (it answers CONPAAS_VERSION), with something to leave out."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wsgi.py").write_text(WSGI_LABEL_APP + f"# build {build}\n")
    (folder / "notes.log").write_text("left out")
    (folder / ".conpaasignore").write_text("*.log\n")
    return folder


def test_it_pushes_the_python_example_to_a_new_environment_showing_progress(cli, logged_in, server, service):
    result = cli("push", "cli-push", EXAMPLE, "--env", "staging")

    assert result.code == 0, result.err
    progress = result.err.splitlines()
    assert progress[0].startswith("packed 1 file (") and " into python.tar.gz (" in progress[0], result.err
    assert progress[1].startswith("uploaded ") and " to cli-push (id " in progress[1], result.err
    label = progress[1].split()[1]
    assert LABEL.match(label), label
    assert progress[2] == "created environment staging"
    assert progress[3:] and all(line.startswith("deploy #") for line in progress[3:]), result.err
    staging = environment(logged_in, service, "staging")
    assert result.out.splitlines() == [
        "✓ deploy succeeded",
        f"staging of cli-push now serves {label}",
        f"preview: {staging['preview_url']}",
    ]
    assert server.served(service, staging["preview_key"]) == label  # what the app says: test_real_platform.py


def test_it_pushes_with_a_label_and_deploys_the_same_content_again_without_uploading(
    cli, logged_in, server, service, tmp_path
):
    folder = app(tmp_path / "shop", "1")

    first = cli("push", "cli-push", folder, "--label", "push-1", "--env", "production")
    assert first.code == 0, first.err
    assert first.err.splitlines()[0].startswith("packed 1 file (") and "; 1 left out by .conpaasignore" in first.err
    assert "production of cli-push now serves push-1" in first.out
    assert f"url: {service['url']}" in first.out
    assert server.served(service) == "push-1"

    count = len(versions(logged_in, service))
    again = cli("push", "cli-push", folder, "-l", "push-1", "-e", "production", "--json")
    assert again.code == 0, again.err
    assert (
        f"push-1 (id {versions(logged_in, service)['push-1']['id']}) has this content already: deploying it"
        in again.err
    )
    assert again.json()["version"]["label"] == "push-1"
    assert again.json()["environment"]["version_label"] == "push-1"
    assert len(versions(logged_in, service)) == count, "nothing uploaded"

    (folder / "wsgi.py").write_text(WSGI_LABEL_APP + "# build 2\n")
    other = cli("push", "cli-push", folder, "--label", "push-1")
    assert other.code == 1
    assert other.err.endswith(
        "error: cli-push already has a version labelled 'push-1', with other content; choose another --label\n"
    )
    assert len(versions(logged_in, service)) == count, "nothing stored"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_it_labels_a_clean_checkout_with_its_commit(cli, logged_in, server, service, tmp_path):
    folder = app(tmp_path / "repo", "git")

    def git(*args):
        return subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    commit = git("rev-parse", "--short", "HEAD").strip()

    result = cli("push", "cli-push", folder)

    assert result.code == 0, result.err
    assert f"development of cli-push now serves {commit}" in result.out
    assert server.served(service, environment(logged_in, service, "development")["preview_key"]) == commit


def test_it_uploads_a_directory_as_a_code_version(cli, logged_in, service, tmp_path):
    result = cli("versions", "upload", "cli-push", app(tmp_path / "v", "upload"), "--json")

    assert result.code == 0, result.err
    assert result.err.startswith("packed 1 file (")
    uploaded = result.json()
    assert (uploaded["kind"], uploaded["entry_point"]) == ("tar.gz", "wsgi:application")
    assert re.fullmatch(r"v\d+", uploaded["label"]), "without --label the server names it"
    assert versions(logged_in, service)[uploaded["label"]]["sha256"] == uploaded["sha256"]


def test_it_refuses_an_empty_directory_and_stores_nothing(cli, logged_in, service, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    before = versions(logged_in, service)

    result = cli("push", "cli-push", empty)

    assert (result.code, result.out) == (1, "")
    assert result.err == f"error: {empty} has no files to pack\n"
    assert versions(logged_in, service) == before


def test_it_refuses_a_link_out_of_the_directory_and_stores_nothing(cli, logged_in, service, tmp_path):
    folder = app(tmp_path / "linked", "link")
    (folder / "passwd").symlink_to("/etc/passwd")
    before = versions(logged_in, service)

    for argv in (("push", "cli-push", folder), ("versions", "upload", "cli-push", folder)):
        result = cli(*argv)
        assert result.code == 1
        assert result.err == (
            f"error: {folder}/passwd is a symbolic link to /etc/passwd, outside {folder}: links are never "
            "followed out of the directory (remove it, or add it to .conpaasignore)\n"
        )
    assert versions(logged_in, service) == before


def test_it_shows_the_servers_refusal_and_stores_nothing(cli, logged_in, service, tmp_path):
    folder = tmp_path / "no-entry-point"
    folder.mkdir()
    (folder / "app.py").write_text("print('no wsgi.py here')\n")
    before = versions(logged_in, service)

    result = cli("push", "cli-push", folder)

    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        "error: no WSGI entry point: add wsgi.py exposing `application` at the top of the archive, "
        "or a Procfile with a web: line"
    )
    assert versions(logged_in, service) == before


def test_it_shows_an_upload_over_the_limit_in_one_line(cli, logged_in, service, tmp_path):
    big = tmp_path / "big.zip"
    with big.open("wb") as file:
        file.truncate(101 * 2**20)  # sparse: over the 100 MB limit, nothing written
    before = versions(logged_in, service)

    for argv in (("push", "cli-push", big), ("versions", "upload", "cli-push", big)):
        result = cli(*argv)
        assert result.code == 1
        assert result.err == "error: the upload is larger than the limit of 100 MB (big.zip is 105.9 MB)\n"
    assert versions(logged_in, service) == before


def test_it_says_the_version_is_uploaded_when_the_environment_is_refused(cli, logged_in, service, tmp_path):
    result = cli("push", "cli-push", app(tmp_path / "named", "bad-env"), "--env", "Not A Name", "--label", "bad-env")

    assert result.code == 1
    last = result.err.splitlines()[-1]
    assert last.startswith("error: name: ")
    assert last.endswith("; bad-env is uploaded, deploy it with: conpaas deploy cli-push 'Not A Name' bad-env")
    names = [e["name"] for e in logged_in.get(f"/api/v1/services/{service['id']}/environments/").json()]
    assert "Not A Name" not in names
    assert "bad-env" in versions(logged_in, service)


def test_it_exits_1_when_the_deploy_fails(cli, logged_in, server, service, tmp_path):
    folder = tmp_path / "crashing"
    folder.mkdir()
    (folder / "wsgi.py").write_text("raise RuntimeError('this app cannot start')\n")
    server.fleet.crashing["crashing"] = "RuntimeError: this app cannot start"  # what it prints as it exits
    before = environment(logged_in, service, "development")["version_label"]

    result = cli("push", "cli-push", folder, "--label", "crashing")

    assert result.code == 1
    assert result.out == ""
    assert "✗ deploy failed: " in result.err and "this app cannot start" in result.err
    assert environment(logged_in, service, "development")["version_label"] == before


def test_it_refuses_unknown_services_and_missing_paths(cli, logged_in, service, tmp_path):
    unknown = cli("push", "no-such-service", EXAMPLE)
    assert unknown.code == 1 and unknown.err.startswith("error: no service named 'no-such-service' (you have: ")

    missing = cli("push", "cli-push", tmp_path / "missing")
    assert (missing.code, missing.err) == (1, f"error: cannot read {tmp_path / 'missing'}: No such file or directory\n")


def test_it_exits_2_on_usage_errors(cli):
    assert cli("push").code == 2
    assert cli("push", "shop", "a", "b").code == 2
    assert cli("push", "shop", "--env").code == 2


def test_it_exits_3_when_not_logged_in_or_the_server_cannot_be_reached(cli, config_file):
    not_logged_in = cli("push", "shop", EXAMPLE)
    assert (not_logged_in.code, not_logged_in.err) == (3, "error: not logged in (run: conpaas login URL)\n")

    from conpaas_cli import config

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config.save({"url": url, "token": "t", "username": "alice"})
    unreachable = cli("push", "shop", EXAMPLE)
    assert (unreachable.code, unreachable.err) == (3, f"error: cannot reach {url}: Connection refused\n")
