"""Packing a directory for `conpaas push`: the .conpaasignore rules, what goes in the archive, what is refused.

No server: real folders in tmp_path, real archives read back, and the platform's own archive rulebook
(images/conpaas_common/archives/) to check that what is packed is what the server accepts."""

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conpaas_cli.client import MultipartBody
from conpaas_cli.errors import CliError
from conpaas_cli.packing import IgnoreRules, PackError, git_label, open_code, scan
from conpaas_common.archives import inspect_archive

REPO = Path(__file__).resolve().parents[2]


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text(content)
    return root


def members(path: Path) -> dict[str, tarfile.TarInfo]:
    with open_code(path) as code, tarfile.open(fileobj=code.file, mode="r:gz") as archive:
        return {member.name: member for member in archive.getmembers()}


def packed_files(path: Path) -> list[str]:
    return sorted(name for name, member in members(path).items() if member.isfile())


def read_member(path: Path, name: str) -> bytes:
    with open_code(path) as code, tarfile.open(fileobj=code.file, mode="r:gz") as archive:
        return archive.extractfile(name).read()


# --- the ignore rules ------------------------------------------------------------------------------


def test_it_skips_comments_and_blank_lines():
    rules = IgnoreRules("# a comment\n\n   \n*.log\n")

    assert len(rules.rules) == 1
    assert rules.excludes("app.log", False)
    assert not rules.excludes("# a comment", False)


def test_it_matches_a_pattern_without_a_slash_at_any_depth():
    rules = IgnoreRules("*.pyc\n__pycache__\n")

    assert rules.excludes("a.pyc", False)
    assert rules.excludes("pkg/sub/a.pyc", False)
    assert not rules.excludes("a.py", False)
    assert not rules.excludes("a.pyc.txt", False)
    assert rules.excludes("pkg/__pycache__", True)


def test_a_star_does_not_cross_a_slash():
    rules = IgnoreRules("docs/*.md\n")

    assert rules.excludes("docs/a.md", False)
    assert not rules.excludes("docs/sub/a.md", False)
    assert not rules.excludes("other/docs/a.md", False), "a slash in the middle anchors the pattern"


def test_a_leading_slash_anchors_the_pattern_to_the_directory():
    rules = IgnoreRules("/build\n")

    assert rules.excludes("build", True)
    assert not rules.excludes("src/build", True)


def test_a_trailing_slash_matches_directories_only():
    rules = IgnoreRules("logs/\n")

    assert rules.excludes("logs", True)
    assert rules.excludes("app/logs", True)
    assert not rules.excludes("logs", False)


def test_the_last_matching_rule_wins_and_negation_takes_back():
    rules = IgnoreRules("*.log\n!keep.log\n")

    assert rules.excludes("debug.log", False)
    assert not rules.excludes("keep.log", False)
    assert not rules.excludes("sub/keep.log", False)
    assert IgnoreRules("!keep.log\n*.log\n").excludes("keep.log", False), "an earlier negation loses"


def test_double_stars_match_any_number_of_directories():
    rules = IgnoreRules("**/tmp\na/**/b\ncache/**\n")

    assert rules.excludes("tmp", True) and rules.excludes("x/y/tmp", True)
    assert rules.excludes("a/b", False) and rules.excludes("a/x/y/b", False)
    assert rules.excludes("cache/x", False) and rules.excludes("cache/x/y", False)
    assert not rules.excludes("cache", True), "cache/** is what is inside, not cache itself"


def test_it_supports_question_marks_classes_and_escapes():
    rules = IgnoreRules("file?.txt\n[abc].cfg\n[!x]y.md\n\\#notes\n\\!bang\nspace\\ \n")

    assert rules.excludes("file1.txt", False) and not rules.excludes("file12.txt", False)
    assert rules.excludes("b.cfg", False) and not rules.excludes("d.cfg", False)
    assert rules.excludes("ay.md", False) and not rules.excludes("xy.md", False)
    assert rules.excludes("#notes", False)
    assert rules.excludes("!bang", False)
    assert rules.excludes("space ", False) and not rules.excludes("space", False)
    assert IgnoreRules("name   \n").excludes("name", False), "unescaped trailing spaces are dropped"


def test_a_pattern_never_matches_across_a_slash_through_a_class_or_question_mark():
    rules = IgnoreRules("a?b\na[/]c\n")

    assert not rules.excludes("a/b", False)
    assert not rules.excludes("a/c", False)


# --- packing ---------------------------------------------------------------------------------------


def test_it_packs_files_and_folders_honouring_the_ignore_file(tmp_path):
    tree(
        tmp_path,
        {
            "wsgi.py": "application = None\n",
            "pkg/mod.py": "x = 1\n",
            "pkg/mod.pyc": "compiled",
            "pkg/__pycache__/mod.cpython-311.pyc": "compiled",
            "logs/debug.log": "noise",
            "logs/keep.log": "kept",
            "build/out.txt": "built",
            "src/build/x.txt": "nested build folder",
            "empty/": "",
            ".conpaasignore": "# build output\n*.pyc\n__pycache__/\nlogs/*.log\n!logs/keep.log\n/build\n",
        },
    )

    found = members(tmp_path)

    assert packed_files(tmp_path) == ["logs/keep.log", "pkg/mod.py", "src/build/x.txt", "wsgi.py"]
    assert found["empty"].isdir(), "empty folders are kept"
    assert ".conpaasignore" not in found, "the ignore file itself is not packed"


def test_a_negation_does_not_take_back_a_file_of_a_folder_left_out(tmp_path):
    tree(tmp_path, {"app.py": "", "vendor/keep.py": "", ".conpaasignore": "vendor/\n!vendor/keep.py\n"})

    assert packed_files(tmp_path) == ["app.py"]


def test_files_of_a_folder_can_be_taken_back_when_its_content_is_left_out_rather_than_itself(tmp_path):
    tree(
        tmp_path,
        {"app.py": "", "vendor/keep.py": "", "vendor/drop.py": "", ".conpaasignore": "vendor/*\n!vendor/keep.py\n"},
    )

    assert packed_files(tmp_path) == ["app.py", "vendor/keep.py"]


def test_it_always_leaves_out_git(tmp_path):
    tree(tmp_path, {"app.py": "", ".git/config": "[core]", "sub/.git": "gitdir: ../.git/modules/sub", "sub/a": ""})

    assert packed_files(tmp_path) == ["app.py", "sub/a"]
    assert not any(".git" in name.split("/") for name in members(tmp_path))


def test_it_keeps_executable_bits_and_drops_owners(tmp_path):
    tree(tmp_path, {"run.sh": "#!/bin/sh\n", "data.txt": "x"})
    (tmp_path / "run.sh").chmod(0o700)
    (tmp_path / "data.txt").chmod(0o600)

    found = members(tmp_path)

    assert found["run.sh"].mode == 0o755 and found["data.txt"].mode == 0o644
    assert {(m.uid, m.gid, m.uname, m.gname) for m in found.values()} == {(0, 0, "", "")}


def test_the_same_tree_packs_to_the_same_bytes(tmp_path):
    tree(tmp_path, {"a.py": "a", "b/c.py": "c"})

    with open_code(tmp_path) as first:
        digest = first.sha256
    with open_code(tmp_path) as second:
        assert second.sha256 == digest
    # A file's time is not its content: a fresh clone, or a touch, packs to the same bytes.
    os.utime(tmp_path / "a.py", (1_700_000_000, 1_700_000_000))
    os.utime(tmp_path / "b", (1_600_000_000, 1_600_000_000))
    with open_code(tmp_path) as touched:
        assert touched.sha256 == digest

    (tmp_path / "a.py").write_text("changed")
    with open_code(tmp_path) as changed:
        assert changed.sha256 != digest


def test_the_archive_is_built_in_a_temporary_file_gone_afterwards(tmp_path, monkeypatch):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    app = tree(tmp_path / "app", {"wsgi.py": "x" * 100_000})

    with open_code(app) as code:
        assert code.file.fileno() >= 0 and code.filename == "app.tar.gz"
        assert code.size == os.fstat(code.file.fileno()).st_size
    assert code.file.closed
    assert list(temporary.iterdir()) == []


def test_what_it_packs_passes_the_platforms_archive_rules():
    with open_code(REPO / "examples" / "python") as code:
        info = inspect_archive(code.file, "python")

    assert (info.kind, info.entry_point) == ("tar.gz", "wsgi:application")


def test_a_link_to_a_file_inside_is_packed_as_a_copy(tmp_path):
    tree(tmp_path, {"real/settings.py": "DEBUG = False\n"})
    (tmp_path / "settings.py").symlink_to("real/settings.py")

    found = members(tmp_path)

    assert found["settings.py"].isfile(), "archives hold no links"
    assert read_member(tmp_path, "settings.py") == b"DEBUG = False\n"


def test_it_refuses_a_link_out_of_the_directory_and_never_reads_through_it(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    app = tree(tmp_path / "app", {"wsgi.py": ""})
    (app / "leak").symlink_to(secret)

    with pytest.raises(PackError) as refused:
        scan(app)

    assert str(refused.value) == (
        f"{app}/leak is a symbolic link to {secret}, outside {app}: links are never followed out of the "
        "directory (remove it, or add it to .conpaasignore)"
    )
    (app / "leak").unlink()
    (app / "up").symlink_to("../app/../secret.txt")
    with pytest.raises(PackError, match="outside"):
        scan(app)


def test_a_link_out_that_is_ignored_is_left_alone(tmp_path):
    app = tree(tmp_path / "app", {"wsgi.py": "", ".conpaasignore": ".venv/\n"})
    (tmp_path / "python").mkdir()
    (app / ".venv").symlink_to(tmp_path / "python")

    assert packed_files(app) == ["wsgi.py"]


def test_it_refuses_links_to_directories_and_to_nothing(tmp_path):
    app = tree(tmp_path / "app", {"wsgi.py": "", "static/a.css": ""})
    (app / "assets").symlink_to("static")
    with pytest.raises(PackError, match=r"app/assets is a symbolic link to the directory static: archives hold no"):
        scan(app)

    (app / "assets").unlink()
    (app / "loop").symlink_to("loop")
    with pytest.raises(PackError, match=r"app/loop is a symbolic link to loop, which does not exist"):
        scan(app)


def test_it_refuses_special_files_without_waiting_on_them(tmp_path):
    app = tree(tmp_path / "app", {"wsgi.py": ""})
    os.mkfifo(app / "pipe")

    with pytest.raises(PackError) as refused:
        scan(app)

    assert str(refused.value) == f"{app}/pipe is a FIFO, which archives cannot hold: add it to .conpaasignore"
    (app / ".conpaasignore").write_text("pipe\n")
    assert packed_files(app) == ["wsgi.py"]


def test_it_says_which_file_it_cannot_read(tmp_path, monkeypatch):
    app = tree(tmp_path / "app", {"wsgi.py": "", "private.key": "secret"})
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        # The tests run as root, who reads any file whatever its mode: the refusal is made here.
        if str(path).endswith("private.key"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)

    with pytest.raises(PackError) as refused, open_code(app):
        pass

    assert str(refused.value) == (
        f"cannot read {app}/private.key: Permission denied (add it to .conpaasignore to leave it out)"
    )


def test_it_says_which_folder_it_cannot_read(tmp_path, monkeypatch):
    app = tree(tmp_path / "app", {"wsgi.py": "", "locked/a": ""})
    real_scandir = os.scandir

    def refusing_scandir(path):
        if str(path).endswith("locked"):  # as for files: root lists any folder whatever its mode
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing_scandir)

    with pytest.raises(PackError) as refused:
        scan(app)

    assert str(refused.value) == f"cannot read {app}/locked: Permission denied"


def test_it_refuses_names_that_are_not_utf8(tmp_path):
    app = tree(tmp_path / "app", {"wsgi.py": ""})
    (Path(os.fsdecode(bytes(app))) / os.fsdecode(b"caf\xe9.txt")).write_text("")

    with pytest.raises(PackError, match="its name is not valid UTF-8"):
        scan(app)


def test_it_refuses_a_directory_with_nothing_to_pack(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(PackError) as refused, open_code(empty):
        pass
    assert str(refused.value) == f"{empty} has no files to pack"

    all_ignored = tree(tmp_path / "ignored", {"a.log": "", "b.log": "", ".conpaasignore": "*.log\n"})
    with pytest.raises(PackError) as refused, open_code(all_ignored):
        pass
    assert str(refused.value) == f"{all_ignored} has no files to pack (2 left out by .conpaasignore)"


def test_a_directory_holding_only_a_war_gives_that_war_as_it_is(tmp_path):
    app = tree(tmp_path / "app", {"ROOT.war": "PK war bytes", "notes.txt": "", ".conpaasignore": "*.txt\n"})

    with open_code(app) as code:
        assert (code.filename, code.war, code.file.read()) == ("ROOT.war", "ROOT.war", b"PK war bytes")

    (app / ".conpaasignore").unlink()
    with open_code(app) as code:
        assert code.filename == "app.tar.gz" and code.war is None, "a .war among other files is packed with them"


def test_a_file_is_uploaded_as_it_is(tmp_path):
    archive = tmp_path / "site.zip"
    archive.write_bytes(b"PK zip bytes")

    with open_code(archive) as code:
        assert (code.filename, code.tree, code.file.read()) == ("site.zip", None, b"PK zip bytes")

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(CliError) as refused, open_code(tmp_path / "pipe"):
        pass
    assert str(refused.value) == f"{tmp_path}/pipe is neither a file nor a directory"


# --- labels ----------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_label_is_the_commit_of_a_clean_checkout(tmp_path):
    app = tree(tmp_path / "repo", {"app/wsgi.py": "", "other.txt": ""})

    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path / "repo"), *args], check=True, capture_output=True, text=True)

    assert git_label(app / "app") is None, "not a checkout"
    git("init", "-q")
    assert git_label(app / "app") is None, "no commit yet"
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    commit = git("rev-parse", "--short", "HEAD").stdout.strip()

    assert git_label(app / "app") == commit
    (app / "other.txt").write_text("changed outside the pushed folder")
    assert git_label(app / "app") == commit
    (app / "app" / "new.py").write_text("")
    assert git_label(app / "app") is None, "an untracked file under it"


# --- the upload body -------------------------------------------------------------------------------


def test_the_upload_body_streams_the_file_with_its_length_known(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"x" * 200_000)
    seen = []

    with archive.open("rb") as file:
        body = MultipartBody({"label": "v1"}, "archive", 'we"ird\r\n.tar.gz', file, lambda s, n: seen.append((s, n)))
        data = b"".join(iter(lambda: body.read(8192), b""))

    assert len(data) == len(body)
    assert b'name="label"\r\n\r\nv1\r\n' in data
    assert b'filename="we_ird__.tar.gz"' in data
    assert b"x" * 200_000 in data and data.endswith(b"--\r\n")
    assert seen[-1] == (200_000, 200_000) and len(seen) > 1


def test_the_upload_body_of_an_empty_file_is_complete(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"")

    with (tmp_path / "a.zip").open("rb") as file:
        body = MultipartBody({}, "archive", "a.zip", file)
        data = body.read(1 << 20) + body.read(1 << 20)

    assert len(data) == len(body) and data.endswith(b"--\r\n")
