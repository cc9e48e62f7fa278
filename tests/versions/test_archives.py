"""Tests for the archive rulebook, images/conpaas_common/archives/ (pure Python, no Django needed:
``.venv/bin/python -m pytest -p no:django tests/versions/test_archives.py -q`` runs them alone)."""

import bz2
import gzip
import hashlib
import io
import os
import stat
import tarfile
import zipfile

import pytest

from conpaas_common.archives import ArchiveError, ArchiveInfo, Limits, inspect_archive

MiB = 2**20
WSGI = b"def application(environ, start_response):\n    return []\n"


# ---------------------------------------------------------------- builders


def make_zip(files, method=zipfile.ZIP_DEFLATED):
    """files: {name: bytes} or list of (name, bytes) / ZipInfo pairs."""
    buf = io.BytesIO()
    items = files.items() if isinstance(files, dict) else files
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in items:
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(members, compress=True):
    """members: {name: bytes} or list of TarInfo/(name, bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        items = members.items() if isinstance(members, dict) else members
        for item in items:
            if isinstance(item, tarfile.TarInfo):
                tf.addfile(item)
            else:
                name, data = item
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def special(name, type_, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    return ti


def inspect(data, runtime="python", **limits):
    return inspect_archive(io.BytesIO(data), runtime, Limits(**limits))


def refused(data, runtime="python", **limits):
    with pytest.raises(ArchiveError) as exc:
        inspect(data, runtime, **limits)
    msg = str(exc.value)
    assert "Traceback" not in msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------- valid


def test_it_accepts_a_python_zip_with_wsgi_py():
    data = make_zip({"wsgi.py": WSGI, "app/__init__.py": b"", "app/views.py": b"x = 1\n"})
    info = inspect(data)
    assert info == ArchiveInfo(
        kind="zip",
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        expanded_size=len(WSGI) + 6,
        members=3,
        entry_point="wsgi:application",
    )


def test_it_accepts_a_python_tar_gz():
    data = make_tar({"./wsgi.py": WSGI, "./static/site.css": b"body {}\n"})
    info = inspect(data)
    assert info.kind == "tar.gz"
    assert info.entry_point == "wsgi:application"
    assert info.members == 2
    assert info.expanded_size == len(WSGI) + 8


def test_it_accepts_static_and_php_archives():
    assert inspect(make_zip({"index.html": b"<h1>hi</h1>"}), "static").kind == "zip"
    assert inspect(make_tar({"index.php": b"<?php echo 1;"}), "php").entry_point is None


def test_it_detects_the_type_from_content_not_name():
    data = make_tar({"index.html": b"hi"})
    info = inspect_archive(io.BytesIO(data), "static", filename="site.zip")
    assert info.kind == "tar.gz"


# ---------------------------------------------------------------- Procfile


@pytest.mark.parametrize(
    "line, expected",
    [
        ("web: gunicorn myproj.wsgi:app --workers 3 --bind 0.0.0.0:$PORT", "myproj.wsgi:app"),
        ("web: gunicorn -w 4 --preload -b :8000 myproj.wsgi:app", "myproj.wsgi:app"),
        ("web: python -m gunicorn --bind=:8000 myproj.wsgi", "myproj.wsgi:application"),
        ("web: myproj.wsgi:app", "myproj.wsgi:app"),
        ("web:myproj:create", "myproj:create"),
    ],
)
def test_it_takes_the_entry_point_from_the_procfile(line, expected):
    data = make_zip(
        {
            "Procfile": f"release: ./migrate.sh\n{line}\n".encode(),
            "myproj/__init__.py": b"",
            "myproj/wsgi.py": WSGI,
        }
    )
    assert inspect(data).entry_point == expected


def test_it_finds_a_procfile_module_that_is_a_package_in_a_tar_gz():
    data = make_tar({"Procfile": b"web: gunicorn svc:app\n", "svc/__init__.py": WSGI})
    assert inspect(data).entry_point == "svc:app"


def test_it_refuses_a_procfile_whose_module_is_missing():
    data = make_zip({"Procfile": b"web: gunicorn shop.wsgi:app\n", "shop/__init__.py": b""})
    msg = refused(data)
    assert "shop.wsgi" in msg and "shop/wsgi.py" in msg


@pytest.mark.parametrize(
    "line",
    [
        "web: gunicorn 'shop.wsgi:create_app()'",
        "web: gunicorn shop/wsgi.py",
        "web: 9lives:app",
    ],
)
def test_it_refuses_a_procfile_with_a_bad_spec(line):
    data = make_zip({"Procfile": line.encode(), "shop/wsgi.py": WSGI})
    assert "not a valid WSGI spec" in refused(data)


def test_it_refuses_a_procfile_web_line_that_is_not_gunicorn():
    data = make_zip({"Procfile": b"web: python app.py\n", "app.py": WSGI})
    assert "gunicorn module:callable" in refused(data)


def test_it_refuses_python_without_an_entry_point():
    data = make_zip({"app.py": WSGI, "Procfile": b"worker: celery -A app worker\n", "sub/wsgi.py": WSGI})
    assert refused(data) == (
        "no WSGI entry point: add wsgi.py exposing `application` at the top of the "
        "archive, or a Procfile with a web: line"
    )


# ---------------------------------------------------------------- wrong type


@pytest.mark.parametrize(
    "data, what",
    [
        (b"hello, this is not an archive\n", "is a text file, not a zip or tar.gz archive"),
        (b"", "is an empty file, not a zip or tar.gz archive"),
        (make_tar({"wsgi.py": WSGI}, compress=False), "is an uncompressed tar archive"),
        (bz2.compress(make_tar({"wsgi.py": WSGI}, compress=False)), "is a bzip2-compressed file"),
        (bytes(range(256)), "is not a zip or tar.gz archive"),
    ],
)
def test_it_refuses_files_that_are_not_zip_or_tar_gz(data, what):
    msg = refused(data)
    assert what in msg and msg.startswith("the upload ")


def test_it_names_the_file_in_type_errors():
    with pytest.raises(ArchiveError, match=r"^'notes.zip' is a text file"):
        inspect_archive(io.BytesIO(b"hi"), "static", filename="C:\\tmp\\notes.zip")


def test_it_refuses_gzip_that_is_not_a_tar():
    assert "gzip-compressed but does not contain a tar archive" in refused(gzip.compress(b"just some text " * 100))


# ---------------------------------------------------------------- member names


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.py", "'..' path component"),
        ("app/../../evil.py", "'..' path component"),
        ("app\\..\\..\\evil.py", "'..' path component"),
        ("/etc/cron.d/evil", "absolute path"),
        ("\\windows\\evil.py", "absolute path"),
        ("C:evil.py", "drive letter"),
    ],
)
def test_it_refuses_dangerous_paths_in_zip(name, reason):
    msg = refused(make_zip({"wsgi.py": WSGI, name: b"x"}))
    assert repr(name) in msg and reason in msg


@pytest.mark.parametrize(
    "name, reason",
    [
        ("../evil.py", "'..' path component"),
        ("/etc/cron.d/evil", "absolute path"),
    ],
)
def test_it_refuses_dangerous_paths_in_tar(name, reason):
    msg = refused(make_tar([("wsgi.py", WSGI), (name, b"x")]))
    assert repr(name) in msg and reason in msg


def test_it_refuses_a_nul_byte_in_a_zip_member_name():
    data = make_zip({"wsgi.py": WSGI, "evilXname.py": b"x"}, zipfile.ZIP_STORED)
    data = data.replace(b"evilXname", b"evil\x00name")
    assert "NUL byte" in refused(data)


# ---------------------------------------------------------------- member types


def test_it_refuses_a_symlink_in_tar():
    msg = refused(make_tar([("wsgi.py", WSGI), special("link", tarfile.SYMTYPE, "/etc/passwd")]))
    assert msg == "member 'link' is a symbolic link, which is not allowed"


def test_it_refuses_a_hard_link_in_tar():
    msg = refused(make_tar([("wsgi.py", WSGI), special("hard", tarfile.LNKTYPE, "wsgi.py")]))
    assert "'hard' is a hard link" in msg


@pytest.mark.parametrize(
    "type_, what",
    [
        (tarfile.CHRTYPE, "device file"),
        (tarfile.BLKTYPE, "device file"),
        (tarfile.FIFOTYPE, "FIFO"),
    ],
)
def test_it_refuses_devices_and_fifos_in_tar(type_, what):
    assert f"'dev' is a {what}" in refused(make_tar([("wsgi.py", WSGI), special("dev", type_)]))


def test_it_refuses_a_symlink_in_zip():
    link = zipfile.ZipInfo("static")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    msg = refused(make_zip([("wsgi.py", WSGI), (link, "/etc")]))
    assert "'static' is a symbolic link" in msg


def test_it_refuses_a_fifo_in_zip():
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
    assert "'pipe' is a FIFO" in refused(make_zip([("wsgi.py", WSGI), (fifo, b"")]))


# ---------------------------------------------------------------- limits and bombs


def _zeros_zip(nbytes):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("wsgi.py", WSGI)
        with zf.open("zeros.bin", "w") as member:
            chunk = bytes(MiB)
            for _ in range(nbytes // MiB):
                member.write(chunk)
    return buf.getvalue()


def test_it_refuses_a_zip_bomb_by_ratio():
    data = _zeros_zip(50 * MiB)  # ~50 KB compressed
    assert len(data) < 100_000
    msg = refused(data)
    assert msg.startswith("member 'zeros.bin' expands 1,0")
    assert "to 50 MB); the limit is 100 times" in msg


def test_it_refuses_a_zip_over_the_expanded_limit():
    msg = refused(_zeros_zip(2 * MiB), max_expanded_bytes=MiB)
    assert msg == "the archive expands to 2 MB; the limit is 1 MB"


def test_it_refuses_a_zip_whose_central_directory_lies_about_sizes():
    data = _zeros_zip(2 * MiB)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo("zeros.bin")
    real = (2 * MiB).to_bytes(4, "little")
    fake = (1000).to_bytes(4, "little")
    assert data.count(real) == 2  # local header and central directory
    msg = refused(data.replace(real, fake), max_expanded_bytes=MiB)
    assert msg.startswith("the archive is corrupt:") and info.filename in msg


def test_it_refuses_a_gzip_bomb_behind_a_tiny_tar_header():
    tar = make_tar({"wsgi.py": WSGI}, compress=False)
    data = gzip.compress(tar + bytes(5 * MiB), mtime=0)  # headers declare only a few bytes
    msg = refused(data, max_expanded_bytes=MiB, max_ratio=1e9)
    assert msg == "the archive expands to more than the limit of 1 MB"


def test_it_refuses_a_tar_gz_bomb_by_ratio():
    data = make_tar({"wsgi.py": WSGI, "zeros.bin": bytes(3 * MiB)})
    msg = refused(data)
    assert "expands" in msg and "the limit is 100 times" in msg


def test_it_refuses_too_many_members():
    files = {f"f{i}.txt": b"" for i in range(11)}
    assert refused(make_zip(files), "static", max_members=10) == ("the archive has 11 members; the limit is 10")
    assert refused(make_tar(files), "static", max_members=10) == (
        "the archive has more than 10 members; the limit is 10"
    )


def test_it_refuses_a_too_big_upload_before_reading_it():
    class Upload(io.BytesIO):
        size = 150 * MiB + 123

        def read(self, *args):  # pragma: no cover - must not be called
            raise AssertionError("read() called")

    with pytest.raises(ArchiveError) as exc:
        inspect_archive(Upload(b"PK\x03\x04"), "static")
    assert str(exc.value) == "the archive is 150 MB; the limit is 100 MB"
    assert (
        refused(make_zip({"a": bytes(5000)}, zipfile.ZIP_STORED), "static", max_upload_bytes=4096)
        == "the archive is 5 KB; the limit is 4 KB"
    )


def test_it_refuses_a_corrupt_zip():
    data = make_zip({"wsgi.py": WSGI}, zipfile.ZIP_STORED)
    corrupt = data.replace(b"application", b"applicatiox")
    msg = refused(corrupt)
    assert msg.startswith("the archive is corrupt: ") and "CRC" in msg
    assert refused(data[: len(data) // 2]).startswith("the archive is corrupt: ")


def test_it_refuses_a_truncated_tar_gz():
    data = make_tar({"wsgi.py": WSGI, "big.txt": os.urandom(200_000)})
    assert refused(data[:-5000]).startswith("the archive is corrupt: ")


# ---------------------------------------------------------------- runtimes


def test_it_accepts_a_java_war():
    data = make_zip({"WEB-INF/web.xml": b"<web-app/>", "index.jsp": b"<p>hi</p>"})
    info = inspect(data, "java")
    assert info.kind == "war" and info.entry_point is None


def test_it_refuses_a_zip_that_is_not_a_war():
    msg = refused(make_zip({"index.jsp": b"<p>hi</p>", "lib/WEB-INF/x": b""}), "java")
    assert msg == "the archive is not a .war: it has no WEB-INF/ directory at the top level"
    assert ".war" in refused(make_tar({"WEB-INF/web.xml": b""}), "java")


def test_it_refuses_static_with_no_files():
    empty_zip = make_zip({})
    assert empty_zip.startswith(b"PK\x05\x06")
    assert refused(empty_zip, "static") == "the archive contains no files"
    assert refused(make_zip({"css/": b"", "js/": b""}), "static") == "the archive contains no files"
    empty_tgz = gzip.compress(make_tar({}, compress=False))
    assert refused(empty_tgz, "php") == "the archive contains no files"


def test_a_php_site_needs_a_php_or_html_file():
    assert inspect(make_zip({"site/index.PHP": b"<?php echo 1;"}), "php").kind == "zip"
    assert inspect(make_tar({"about.html": b"<p>hi</p>"}), "php").kind == "tar.gz"
    msg = refused(make_zip({"notes.txt": b"hi", "style.css": b""}), "php")
    assert msg == "the archive has no .php or .html file: a PHP site needs at least one, e.g. index.php"


def test_a_site_in_one_folder_starts_in_that_folder(tmp_path):
    from conpaas_common.archives import content_root

    (tmp_path / "one" / "site").mkdir(parents=True)
    (tmp_path / "one" / "__MACOSX").mkdir()  # what the Finder adds beside it
    assert content_root(str(tmp_path / "one")) == str(tmp_path / "one" / "site")
    (tmp_path / "two" / "site").mkdir(parents=True)
    (tmp_path / "two" / "index.html").write_text("hi")
    assert content_root(str(tmp_path / "two")) == str(tmp_path / "two")


def test_it_rejects_an_unknown_runtime_as_a_programming_error():
    with pytest.raises(ValueError):
        inspect(make_zip({"a": b"b"}), "cobol")


# ---------------------------------------------------------------- hashing and file position


def test_it_hashes_the_raw_bytes_and_rewinds_the_file():
    data = make_tar({"wsgi.py": WSGI, "data.bin": os.urandom(3 * MiB)})
    f = io.BytesIO(data)
    f.seek(17)
    info = inspect_archive(f, "python")
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert f.tell() == 0


def test_it_rewinds_the_file_after_a_refusal():
    f = io.BytesIO(make_zip({"../evil.py": b"x"}))
    with pytest.raises(ArchiveError):
        inspect_archive(f, "static")
    assert f.tell() == 0


def test_it_refuses_a_zip_whose_members_overlap():
    # Two central directory entries pointing at the same data (overlapping-file zip bomb).
    data = make_zip({"a.txt": b"hello " * 1000})
    cd_start = data.index(b"PK\x01\x02")
    eocd = data.index(b"PK\x05\x06")
    entry = data[cd_start:eocd]
    cd = entry + entry.replace(b"a.txt", b"b.txt")
    end = bytearray(data[eocd:])
    end[8:10] = end[10:12] = (2).to_bytes(2, "little")
    end[12:16] = len(cd).to_bytes(4, "little")
    msg = refused(data[:cd_start] + cd + bytes(end), "static")
    assert msg.startswith("the archive is corrupt: member ") and "overlaps" in msg


def test_it_refuses_a_huge_procfile():
    data = make_tar({"Procfile": b"# padding\n" * 10_000, "wsgi.py": WSGI})
    assert refused(data) == "the Procfile is larger than 64 KB"
