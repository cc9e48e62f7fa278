"""The archive rulebook, shared by the control plane and the agent.

The control plane validates an upload with ``inspect_archive`` (and stores the entry point it
finds); the agent unpacks a staged archive with ``extract_archive`` and runs only an entry point
that ``valid_entry_point`` accepts. Standard library only; its one sibling, ``php_platform``
(the php runtime's extensions), is imported relatively and is standard library only too: the
control plane imports this module as ``images.conpaas_agent.archives`` and the agent as
``conpaas_agent.archives``.

``inspect_archive`` reads an uploaded archive once to hash it, then checks it
thoroughly *before* anything is stored or extracted:

* the type is detected from the content (zip or gzip-compressed tar), never
  from the file name;
* every member is checked: no absolute paths, ``..`` components, drive
  letters or NUL bytes in names; no symlinks, hard links, devices or FIFOs;
* size limits: upload size, number of members, expanded size and the
  expansion ratio (compression bombs).  Actual decompression is counted, so
  lying headers do not help;
* runtime rules: a ``.war`` for java, a WSGI entry point for python, at least
  one file for static, a PHP or HTML file for php, and no ``ext-*`` in the php
  site's composer.json ``require`` that the php runtime lacks.

Any refusal raises ``ArchiveError`` whose ``str()`` is one sentence meant for
the user (the API returns it as HTTP 400, the agent as 422).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import lzma
import os
import re
import shlex
import stat
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .php_platform import composer_problem

__all__ = [
    "ArchiveError",
    "Limits",
    "ArchiveInfo",
    "inspect_archive",
    "extract_archive",
    "valid_entry_point",
    "release_command_problem",
    "content_root",
    "RUNTIMES",
]

RUNTIMES = frozenset({"python", "java", "php", "static"})

MiB = 2**20
#: Members (and archives) no bigger than this are exempt from the ratio check:
#: small, very repetitive files are common and harmless.
RATIO_MIN_BYTES = MiB
#: Largest Procfile we are willing to read.
MAX_PROCFILE_BYTES = 64 * 1024
#: Largest composer.json we are willing to read (MediaWiki's is 5 KB).
MAX_COMPOSER_JSON_BYTES = MiB

_CHUNK = MiB
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_SPEC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_]*)?$")
_PROCFILE_LINE_RE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*(.*)$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
# What makes a php archive a site: a page nginx hands to PHP, or one it serves as it is.
_PHP_SITE_SUFFIXES = (".php", ".html", ".htm")
# Folders archivers add beside the one the user packed (macOS's Finder): not part of a site.
_ARCHIVER_LITTER = frozenset({"__MACOSX"})
_NO_ENTRY_POINT = (
    "no WSGI entry point: add wsgi.py exposing `application` at the top of the archive, or a Procfile with a web: line"
)
# gunicorn command-line options that take no value (all others take one).
_GUNICORN_FLAGS = frozenset(
    {
        "--capture-output",
        "--casefold-http-method",
        "--check-config",
        "--daemon",
        "--disable-redirect-access-to-syslog",
        "--do-handshake-on-connect",
        "--enable-backlog-metric",
        "--enable-stdio-inheritance",
        "--initgroups",
        "--log-syslog",
        "--no-control-socket",
        "--no-sendfile",
        "--permit-obsolete-folding",
        "--permit-unconventional-http-method",
        "--permit-unconventional-http-version",
        "--preload",
        "--print-config",
        "--reload",
        "--reuse-port",
        "--spew",
        "--strip-header-spaces",
        "--suppress-ragged-eofs",
        "--version",
        "--help",
        "-D",
        "-R",
        "-v",
        "-h",
    }
)
_ZIP_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
# Low-level errors that mean "this archive cannot be read".
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    OverflowError,
    NotImplementedError,
)


class ArchiveError(Exception):
    """The archive is refused; str(e) is the reason shown to the user."""


@dataclass(frozen=True)
class Limits:
    """The defaults are the control plane's (CONPAAS_MAX_UPLOAD_MB, CONPAAS_ARCHIVE_*)."""

    max_upload_bytes: int = 100 * 2**20
    max_expanded_bytes: int = 1024 * 2**20
    max_members: int = 200_000
    # expanded size / compressed size, for the whole archive and for each
    # member bigger than 1 MiB (RATIO_MIN_BYTES)
    max_ratio: float = 100.0


@dataclass(frozen=True)
class ArchiveInfo:
    kind: str  # "zip" | "tar.gz" | "war"
    sha256: str
    size: int  # bytes of the archive
    expanded_size: int  # total size of the member files once extracted
    members: int  # entries in the archive (files and directories)
    entry_point: str | None  # python only: WSGI spec "module:callable"
    release: str | None = None  # the Procfile's release: line, run before the version enters an environment


# --------------------------------------------------------------------------
# formatting helpers


def _fmt_size(n: float) -> str:
    """1536 -> '1.5 KB', 100 MiB -> '100 MB' (binary units, as in Limits)."""
    if n < 1024:
        n = int(n)
        return "1 byte" if n == 1 else f"{n} bytes"
    for unit, div in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= div:
            text = f"{n / div:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def _fmt_ratio(r: float) -> str:
    return f"{r:,.0f}" if r >= 10 else f"{r:.3g}"


def _show(name: str) -> str:
    """A member name, quoted and escaped, safe to put in a message."""
    if len(name) > 200:
        name = name[:200] + "..."
    return repr(name)


def _subject(filename: str) -> str:
    base = re.split(r"[/\\]", filename or "")[-1]
    return _show(base) if base else "the upload"


def _corrupt(exc: BaseException) -> ArchiveError:
    detail = str(exc).strip().rstrip(".") or type(exc).__name__
    if isinstance(exc, zlib.error):
        detail = "invalid compressed data (" + detail.split(": ")[-1] + ")"
    elif isinstance(exc, EOFError):
        detail = "the compressed data ends unexpectedly"
    elif isinstance(exc, UnicodeDecodeError):
        detail = "a member name is not valid UTF-8"
    if detail[:1].isupper() and not detail[1:2].isupper():
        detail = detail[0].lower() + detail[1:]
    return ArchiveError(f"the archive is corrupt: {detail}")


# --------------------------------------------------------------------------
# member checks


def _check_name(name: str) -> None:
    if "\x00" in name:
        raise ArchiveError(f"member {_show(name)} has a NUL byte in its name")
    if not name:
        raise ArchiveError("the archive contains a member with an empty name")
    if name.startswith(("/", "\\")):
        raise ArchiveError(f"member {_show(name)} has an absolute path")
    if _DRIVE_RE.match(name):
        raise ArchiveError(f"member {_show(name)} starts with a drive letter")
    if ".." in re.split(r"[/\\]", name):
        raise ArchiveError(f"member {_show(name)} contains a '..' path component")


def _normalize(name: str) -> str:
    """'./pkg//mod.py' -> 'pkg/mod.py' (only called on names that passed _check_name)."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _check_mode(name: str, mode: int) -> None:
    """Refuse special file types given a unix st_mode (zip external_attr >> 16)."""
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"member {_show(name)} is a symbolic link, which is not allowed")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise ArchiveError(f"member {_show(name)} is a device file, which is not allowed")
    if stat.S_ISFIFO(mode):
        raise ArchiveError(f"member {_show(name)} is a FIFO, which is not allowed")
    if stat.S_ISSOCK(mode):
        raise ArchiveError(f"member {_show(name)} is a socket, which is not allowed")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"member {_show(name)} has an unsupported file type")


def _check_tar_type(ti: tarfile.TarInfo) -> None:
    if ti.issym():
        raise ArchiveError(f"member {_show(ti.name)} is a symbolic link, which is not allowed")
    if ti.islnk():
        raise ArchiveError(f"member {_show(ti.name)} is a hard link, which is not allowed")
    if ti.ischr() or ti.isblk():
        raise ArchiveError(f"member {_show(ti.name)} is a device file, which is not allowed")
    if ti.isfifo():
        raise ArchiveError(f"member {_show(ti.name)} is a FIFO, which is not allowed")
    if not (ti.isreg() or ti.isdir()):
        raise ArchiveError(f"member {_show(ti.name)} has an unsupported file type")


def _check_members(count: int, limits: Limits, exact: bool = True) -> None:
    if count > limits.max_members:
        has = f"{count:,}" if exact else f"more than {limits.max_members:,}"
        raise ArchiveError(f"the archive has {has} members; the limit is {limits.max_members:,}")


def _check_member_ratio(name: str, size: int, compressed: int, limits: Limits, approx: bool = False) -> None:
    if size <= RATIO_MIN_BYTES:
        return
    ratio = size / max(compressed, 1)
    if ratio > limits.max_ratio:
        about = "about " if approx else ""
        raise ArchiveError(
            f"member {_show(name)} expands {_fmt_ratio(ratio)} times "
            f"(from {about}{_fmt_size(compressed)} to {_fmt_size(size)}); "
            f"the limit is {_fmt_ratio(limits.max_ratio)} times"
        )


# --------------------------------------------------------------------------
# first pass: size, hash, magic bytes


def _seekable(f) -> bool:
    try:
        return bool(f.seekable()) if hasattr(f, "seekable") else hasattr(f, "seek")
    except (OSError, ValueError):
        return False


def _known_size(f) -> int | None:
    size = getattr(f, "size", None)  # Django UploadedFile
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    try:
        pos = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(pos)
        return end
    except (AttributeError, OSError, ValueError):
        return None


def _hash_pass(src, dest, limits: Limits) -> tuple[str, int, bytes]:
    """Read src to the end: (sha256 hex, size, first 512 bytes).

    Copies to dest when given (for non-seekable inputs).
    """
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    while True:
        chunk = src.read(_CHUNK)
        if not chunk:
            break
        if isinstance(chunk, str):
            raise TypeError("inspect_archive() needs a file opened in binary mode")
        size += len(chunk)
        if size > limits.max_upload_bytes:
            raise ArchiveError(f"the archive is larger than the limit of {_fmt_size(limits.max_upload_bytes)}")
        digest.update(chunk)
        if len(head) < 512:
            head += chunk[: 512 - len(head)]
        if dest is not None:
            dest.write(chunk)
    return digest.hexdigest(), size, bytes(head)


def _sniff(head: bytes) -> str:
    """'zip', 'gzip', or a description of what else the file is ('' if unknown)."""
    if not head:
        return "an empty file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    for magic, what in (
        (b"BZh", "a bzip2-compressed file"),
        (b"\xfd7zXZ\x00", "an xz-compressed file"),
        (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"PK\x07\x08", "a split (multi-volume) zip archive"),
    ):
        if head.startswith(magic):
            return what
    if len(head) >= 512:
        try:
            tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
            return "an uncompressed tar archive"
        except Exception:  # any header parsing failure just means "not a tar"
            pass
    if b"\x00" not in head:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            return "a text file"
        except UnicodeDecodeError:
            pass
    return ""


# --------------------------------------------------------------------------
# the few members read after the pass


class _Kept:
    """The small members the runtime rules read, kept as the pass goes by (by normalized name),
    each cut one byte past its limit so that "too big" still shows: the Procfile, and a
    composer.json at the top or in a top folder, where a php site may start (``_site_root``)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self._nested: str | None = None

    def limit(self, name: str) -> int | None:
        """How many bytes of the file ``name`` to keep (None: none of it)."""
        if name == "Procfile":
            return MAX_PROCFILE_BYTES
        folder, _, base = name.rpartition("/")
        if base != "composer.json" or "/" in folder or folder in _ARCHIVER_LITTER:
            return None
        if folder:
            # Only an archive of one folder starts in it: a second folder's is never read.
            if self._nested not in (None, name):
                return None
            self._nested = name
        return MAX_COMPOSER_JSON_BYTES


# --------------------------------------------------------------------------
# zip


def _inspect_zip(f, size: int, limits: Limits) -> tuple[dict, int, int, dict]:
    """({normalized name: is a file}, expanded size, member count, {name: bytes} of _Kept)."""
    try:
        zf = zipfile.ZipFile(f)
    except _READ_ERRORS as exc:
        raise _corrupt(exc) from None
    with zf:
        infos = zf.infolist()
        _check_members(len(infos), limits)

        entries: dict[str, bool] = {}
        for info in infos:
            _check_name(info.orig_filename)
            _check_mode(info.orig_filename, info.external_attr >> 16)
            if info.flag_bits & 0x1:
                raise ArchiveError(f"member {_show(info.filename)} is encrypted; upload an archive without a password")
            if info.compress_type not in _ZIP_METHODS:
                raise ArchiveError(
                    f"member {_show(info.filename)} uses an unsupported compression "
                    f"method ({info.compress_type}); use deflate or no compression"
                )
            key = _normalize(info.filename)
            if key:
                entries[key] = not info.is_dir()

        declared = sum(i.file_size for i in infos)
        if declared > limits.max_expanded_bytes:
            raise ArchiveError(
                f"the archive expands to {_fmt_size(declared)}; the limit is {_fmt_size(limits.max_expanded_bytes)}"
            )
        for info in infos:
            _check_member_ratio(info.filename, info.file_size, info.compress_size, limits)
        _check_archive_ratio(declared, size, limits)
        _check_zip_overlap(zf, infos)

        # Decompress everything, counting real bytes (and letting zipfile
        # check every CRC), so a lying central directory gains nothing.
        kept = _Kept()
        total = 0
        try:
            for info in infos:
                if info.is_dir() and info.file_size == 0:
                    continue
                key = _normalize(info.filename)
                limit = None if info.is_dir() else kept.limit(key)
                data = bytearray()
                with zf.open(info) as member:
                    while chunk := member.read(_CHUNK):
                        total += len(chunk)
                        if total > limits.max_expanded_bytes:
                            raise ArchiveError(
                                f"the archive expands to more than the limit of {_fmt_size(limits.max_expanded_bytes)}"
                            )
                        if limit is not None and len(data) <= limit:
                            data += chunk[: limit + 1 - len(data)]
                if limit is not None:
                    kept.files[key] = bytes(data)
        except _READ_ERRORS as exc:
            raise _corrupt(exc) from None
    return entries, total, len(infos), kept.files


def _check_zip_overlap(zf: zipfile.ZipFile, infos: list) -> None:
    """Refuse members whose data overlap (the 'overlapping files' zip bomb)."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    for index, info in enumerate(ordered):
        if index + 1 < len(ordered):
            nxt = ordered[index + 1]
            end, other = nxt.header_offset, f"member {_show(nxt.filename)}"
        else:
            end, other = getattr(zf, "start_dir", None), "the central directory"
        # a local header is at least 30 bytes, followed by the compressed data
        if end is not None and info.header_offset + 30 + info.compress_size > end:
            raise ArchiveError(f"the archive is corrupt: member {_show(info.filename)} overlaps {other}")


def _check_archive_ratio(expanded: int, size: int, limits: Limits) -> None:
    if expanded <= RATIO_MIN_BYTES:
        return
    ratio = expanded / max(size, 1)
    if ratio > limits.max_ratio:
        raise ArchiveError(
            f"the archive expands {_fmt_ratio(ratio)} times "
            f"(from {_fmt_size(size)} to {_fmt_size(expanded)}); "
            f"the limit is {_fmt_ratio(limits.max_ratio)} times"
        )


# --------------------------------------------------------------------------
# tar.gz


class _GunzipCounter:
    """read() over the gzip layer, counting compressed bytes consumed and
    decompressed bytes produced, and refusing as soon as a limit is passed."""

    def __init__(self, raw, size: int, limits: Limits):
        self._raw = raw
        self._size = size
        self._limits = limits
        self._d = zlib.decompressobj(_GZIP_WBITS)
        self._in = b""
        self.bytes_in = 0
        self.bytes_out = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 2**62
        out = []
        got = 0
        while got < n:
            if self._d.eof:
                # end of a gzip member: maybe zero padding, maybe another member
                stripped = self._in.lstrip(b"\x00")
                self.bytes_in += len(self._in) - len(stripped)
                self._in = stripped
                if not self._in:
                    self._in = self._raw.read(_CHUNK)
                    if not self._in:
                        break  # clean end of the stream
                    continue
                self._d = zlib.decompressobj(_GZIP_WBITS)
            if not self._in:
                self._in = self._raw.read(_CHUNK)
            before = len(self._in)
            data = self._d.decompress(self._in, min(n - got, _CHUNK))
            self._in = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            self.bytes_in += before - len(self._in)
            if not data and not self._d.eof and len(self._in) == before:
                if before == 0:
                    raise ArchiveError("the archive is corrupt: the gzip data ends unexpectedly")
                raise ArchiveError("the archive is corrupt: the gzip data cannot be decompressed")
            if data:
                self._count(len(data))
                out.append(data)
                got += len(data)
        return b"".join(out)

    def _count(self, n: int) -> None:
        self.bytes_out += n
        limits = self._limits
        if self.bytes_out > limits.max_expanded_bytes:
            raise ArchiveError(f"the archive expands to more than the limit of {_fmt_size(limits.max_expanded_bytes)}")
        if self.bytes_out > RATIO_MIN_BYTES and self.bytes_out > limits.max_ratio * max(self._size, 1):
            raise ArchiveError(
                f"the archive expands more than {_fmt_ratio(limits.max_ratio)} times "
                f"(from {_fmt_size(self._size)} to over {_fmt_size(self.bytes_out)}); "
                f"the limit is {_fmt_ratio(limits.max_ratio)} times"
            )


def _inspect_tar_gz(f, size: int, limits: Limits, subject: str) -> tuple[dict, int, int, dict]:
    stream = _GunzipCounter(f, size, limits)
    try:
        tf = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.ReadError as exc:
        # tarfile says "empty file" both for gzip of nothing and for a tar
        # holding no members (only the zero end-of-archive blocks).
        if str(exc) == "empty file" and stream.bytes_out >= 512 and _only_zeros(stream):
            return {}, 0, 0, {}
        raise ArchiveError(f"{subject} is gzip-compressed but does not contain a tar archive") from None
    except _READ_ERRORS as exc:
        raise _corrupt(exc) from None

    entries: dict[str, bool] = {}
    count = 0
    declared = 0
    kept = _Kept()
    last = None
    last_in = 0
    try:
        with tf:
            for ti in tf:
                count += 1
                _check_members(count, limits, exact=False)
                _check_name(ti.name)
                _check_tar_type(ti)
                if last is not None:  # compressed bytes since the previous header
                    _check_member_ratio(last.name, last.size, stream.bytes_in - last_in, limits, approx=True)
                last, last_in = (ti if ti.isreg() else None), stream.bytes_in
                key = _normalize(ti.name)
                if ti.isreg():
                    declared += ti.size
                    if declared > limits.max_expanded_bytes:
                        raise ArchiveError(
                            f"the archive expands to more than the limit of {_fmt_size(limits.max_expanded_bytes)}"
                        )
                if key:
                    entries[key] = ti.isreg()
                if ti.isreg() and (limit := kept.limit(key)) is not None:
                    data = tf.extractfile(ti).read(limit + 1)
                    if len(data) != min(ti.size, limit + 1):
                        raise ArchiveError(
                            f"the archive is corrupt: the tar data ends in the middle of member {_show(ti.name)}"
                        )
                    kept.files[key] = data
            if last is not None:
                _check_member_ratio(last.name, last.size, stream.bytes_in - last_in, limits, approx=True)
            # Decompress whatever follows the end of the tar data, so nothing
            # hidden after it escapes the limits and the gzip CRC is checked.
            while stream.read(_CHUNK):
                pass
            if tf.members:
                end = tf.members[-1]
                if end.isreg() and stream.bytes_out < end.offset_data + end.size:
                    raise ArchiveError(
                        f"the archive is corrupt: the tar data ends in the middle of member {_show(end.name)}"
                    )
    except _READ_ERRORS as exc:
        raise _corrupt(exc) from None
    return entries, declared, count, kept.files


def _only_zeros(stream: _GunzipCounter) -> bool:
    """After tarfile found no first member: is the rest of the stream padding?"""
    while chunk := stream.read(_CHUNK):
        if chunk.strip(b"\x00"):
            return False
    return True


# --------------------------------------------------------------------------
# runtime rules


def _python_entry_point(entries: dict, procfile: bytes | None) -> str:
    if procfile is not None:
        spec = _procfile_spec(procfile)
        if spec is not None:
            module, _, func = spec.partition(":")
            path = module.replace(".", "/")
            if not (entries.get(f"{path}.py") or entries.get(f"{path}/__init__.py")):
                raise ArchiveError(
                    f"the Procfile web: line names module '{module}', but neither "
                    f"{path}.py nor {path}/__init__.py is in the archive"
                )
            return f"{module}:{func or 'application'}"
    if entries.get("wsgi.py"):
        return "wsgi:application"
    raise ArchiveError(_NO_ENTRY_POINT)


def _procfile_command(procfile: bytes, kind: str) -> str | None:
    """The command of the Procfile's last `kind:` line (None without one)."""
    if len(procfile) > MAX_PROCFILE_BYTES:
        raise ArchiveError(f"the Procfile is larger than {_fmt_size(MAX_PROCFILE_BYTES)}")
    try:
        text = procfile.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ArchiveError("the Procfile is not valid UTF-8 text") from None
    command = None
    for line in text.splitlines():
        m = _PROCFILE_LINE_RE.match(line.strip())
        if m and m.group(1) == kind:
            command = m.group(2).strip()
    return command


def procfile_release(procfile: bytes | None) -> str | None:
    """The command of the Procfile's release: line (None without one); checked as the agent
    checks it (valid_release_command)."""
    if procfile is None:
        return None
    command = _procfile_command(procfile, "release")
    if command is not None and (problem := release_command_problem(command)):
        raise ArchiveError(f"the Procfile release: line {problem}")
    return command


#: Longest release command (one line of a Procfile or a manifest).
MAX_RELEASE_COMMAND = 1000


def release_command_problem(command: object) -> str | None:
    """Why a release command is refused (None: it is fine). It runs without a shell, split as a
    shell would split it: a program and its arguments (several steps: a script)."""
    if not isinstance(command, str) or not command.strip():
        return "must be a command"
    if len(command) > MAX_RELEASE_COMMAND or "\0" in command or "\n" in command:
        return f"must be one line of at most {MAX_RELEASE_COMMAND} characters"
    try:
        shlex.split(command)
    except ValueError:
        return "has unbalanced quotes"
    return None


def _procfile_spec(procfile: bytes) -> str | None:
    """The module:callable of the Procfile's web: line (None if there is no web: line)."""
    command = _procfile_command(procfile, "web")
    if command is None:
        return None
    try:
        tokens = shlex.split(command)
    except ValueError:
        raise ArchiveError("the Procfile web: line has unbalanced quotes") from None

    if tokens and os.path.basename(tokens[0]) == "gunicorn":
        args = tokens[1:]
    elif (
        len(tokens) >= 3
        and re.fullmatch(r"python[0-9.]*", os.path.basename(tokens[0]))
        and tokens[1:3] == ["-m", "gunicorn"]
    ):
        args = tokens[3:]
    elif len(tokens) == 1:
        spec = tokens[0]
        _validate_spec(spec)
        return spec
    else:
        raise ArchiveError(
            "the Procfile web: line must be `gunicorn module:callable [options]` or just `module:callable`"
        )

    spec = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            spec = args[i + 1] if i + 1 < len(args) else None
            break
        if arg.startswith("-") and arg != "-":
            takes_value = not (
                arg in _GUNICORN_FLAGS or "=" in arg or (not arg.startswith("--") and len(arg) > 2)  # -w4
            )
            i += 2 if takes_value else 1
            continue
        spec = arg
        break
    if spec is None:
        raise ArchiveError("the Procfile web: line runs gunicorn without a module:callable")
    _validate_spec(spec)
    return spec


def valid_entry_point(spec: str) -> bool:
    """Whether ``spec`` is a WSGI spec ``package.module[:callable]`` (never shell text, never a
    call such as ``make_app()``): the agent runs only an entry point this accepts."""
    module = spec.partition(":")[0]
    return bool(_SPEC_RE.match(spec)) and all(p.isidentifier() for p in module.split("."))


def _validate_spec(spec: str) -> None:
    if not valid_entry_point(spec):
        raise ArchiveError(
            f"the Procfile web: line names {_show(spec)}, which is not a valid "
            "WSGI spec like `package.module:application`"
        )


def _check_php_site(entries: dict, kept: dict) -> None:
    if not any(is_file and name.lower().endswith(_PHP_SITE_SUFFIXES) for name, is_file in entries.items()):
        raise ArchiveError("the archive has no .php or .html file: a PHP site needs at least one, e.g. index.php")
    path = _site_root(entries) + "composer.json"
    composer = kept.get(path)
    if composer is None:
        return
    if len(composer) > MAX_COMPOSER_JSON_BYTES:
        raise ArchiveError(f"{path} is larger than {_fmt_size(MAX_COMPOSER_JSON_BYTES)}")
    if problem := composer_problem(composer, path):
        raise ArchiveError(problem)


# --------------------------------------------------------------------------
# entry point


def inspect_archive(fileobj: BinaryIO, runtime: str, limits: Limits = Limits(), filename: str = "") -> ArchiveInfo:
    """Validate an uploaded archive for ``runtime``; raise ArchiveError if refused.

    ``fileobj`` is any binary file object (e.g. a Django UploadedFile); it is
    read in chunks and left at position 0.  ``filename`` is only used in
    messages.  An unknown ``runtime`` is a programming error (ValueError).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}")
    subject = _subject(filename)

    known = _known_size(fileobj)
    if known is not None and known > limits.max_upload_bytes:
        raise ArchiveError(f"the archive is {_fmt_size(known)}; the limit is {_fmt_size(limits.max_upload_bytes)}")

    spool = None
    try:
        if _seekable(fileobj):
            fileobj.seek(0)
            src = fileobj
            sha256, size, head = _hash_pass(fileobj, None, limits)
        else:
            spool = src = tempfile.SpooledTemporaryFile(max_size=8 * MiB)
            sha256, size, head = _hash_pass(fileobj, spool, limits)
        src.seek(0)

        what = _sniff(head)
        if what not in ("zip", "gzip"):
            raise ArchiveError(
                f"{subject} is {what}, not a zip or tar.gz archive"
                if what
                else f"{subject} is not a zip or tar.gz archive"
            )
        if runtime == "java" and what != "zip":
            raise ArchiveError(
                "a Java service needs a .war file (a zip archive with a WEB-INF/ "
                "directory), but this is a tar.gz archive"
            )

        if what == "zip":
            entries, expanded, members, kept = _inspect_zip(src, size, limits)
            kind = "zip"
        else:
            entries, expanded, members, kept = _inspect_tar_gz(src, size, limits, subject)
            kind = "tar.gz"
        procfile = kept.get("Procfile")

        entry_point = None
        if runtime == "java":
            if not any(k.split("/")[0] == "WEB-INF" for k in entries):
                raise ArchiveError("the archive is not a .war: it has no WEB-INF/ directory at the top level")
            kind = "war"
        elif runtime == "python":
            entry_point = _python_entry_point(entries, procfile)
        elif not any(entries.values()):
            raise ArchiveError("the archive contains no files")
        elif runtime == "php":
            _check_php_site(entries, kept)

        return ArchiveInfo(
            kind=kind,
            sha256=sha256,
            size=size,
            expanded_size=expanded,
            members=members,
            entry_point=entry_point,
            release=procfile_release(procfile),
        )
    finally:
        if spool is not None:
            spool.close()
        try:
            fileobj.seek(0)
        except (AttributeError, OSError, ValueError):
            pass


# --------------------------------------------------------------------------
# extraction (the agent)


# A served file's time (content_times): web servers make their validators from a file's time and
# size (nginx's ETag and Last-Modified, Tomcat's, whitenoise's), and packing gives every file one
# fixed time (conpaas_cli/packing.py: the same tree packs to the same bytes), so a same-size edit
# would keep its validators and a client be answered 304 for the old content after a swap. A time
# from the content changes with it, is the same on every node, and stays put for a file a new
# version did not change, whose clients keep their copy. (The version's upload time would make
# every unchanged file new at each deploy, and two versions uploaded in one second share it.)
# Its CRC-32 in a window of past times, 2010 to 2018: a same-size edit keeps the time once in 2**28.
CONTENT_TIME_BASE = 1_262_304_000  # 2010-01-01
CONTENT_TIME_SPAN = 1 << 28


def content_time(crc32: int) -> int:
    return CONTENT_TIME_BASE + crc32 % CONTENT_TIME_SPAN


def extract_archive(path: str, dest: str, max_expanded_bytes: int, content_times: bool = False) -> None:
    """Unpack the zip or tar.gz at ``path`` into ``dest``, a new folder, under the member rules of
    ``inspect_archive``, in one pass: each member is checked before it is written. A refused
    archive leaves part of its tree in ``dest``: the caller removes it.

    Files are written with the archive's time (with ``content_times``, the time ``content_time``
    derives from their content: a code version served to browsers) and permission bits, less
    setuid, setgid, sticky and group or other write (tarfile's "data" filter); the archive holds
    no links (refused), so no path written can lead out of ``dest``."""
    with open(path, "rb") as f:
        what = _sniff(f.read(512))
    os.makedirs(dest, exist_ok=True)
    tree = _Tree(dest, max_expanded_bytes, content_times)
    try:
        if what == "zip":
            _extract_zip(path, tree)
        elif what == "gzip":
            _extract_tar_gz(path, tree)
        else:
            raise ArchiveError(f"the archive is {what or 'unknown data'}, not a zip or tar.gz archive")
    except _READ_ERRORS as exc:
        raise _corrupt(exc) from None
    tree.finish()


class _Tree:
    """What extract_archive writes: folders made once each, files counted against the limit."""

    _SAFE_BITS = 0o755  # no setuid, setgid, sticky, group or other write

    def __init__(self, root: str, max_expanded_bytes: int, content_times: bool = False) -> None:
        self.root = root
        self.limit = max_expanded_bytes
        self.content_times = content_times
        self.written = 0
        self._folders = {""}
        self._folder_modes: list[tuple[str, int, float]] = []

    def folder(self, name: str, mode: int | None = None, mtime: float | None = None) -> None:
        if name not in self._folders:
            parent = name.rpartition("/")[0]
            self.folder(parent)
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(self.root, name), 0o755)
            self._folders.add(name)
        if name and mode is not None:
            # Set once everything is written: a read-only folder still takes its files.
            self._folder_modes.append((name, (mode & self._SAFE_BITS) | 0o700, mtime))

    def file(self, name: str, size: int, mode: int, mtime: float | None, read: Callable[[int], bytes]) -> None:
        self.written += size
        if self.written > self.limit:
            raise ArchiveError(f"the archive expands to more than {_fmt_size(self.limit)}, the limit")
        self.folder(name.rpartition("/")[0])
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(os.path.join(self.root, name), flags, 0o600)
        with open(fd, "wb", closefd=True) as out:
            os.fchmod(fd, (mode & self._SAFE_BITS) | 0o600)  # as tarfile does: whatever the umask
            left, crc = size, 0
            while left > 0:
                chunk = read(min(left, _CHUNK))
                if not chunk:
                    raise ArchiveError(f"the archive is corrupt: member {_show(name)} ends early")
                out.write(chunk)
                if self.content_times:
                    crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
            out.flush()  # before the time is set: a later write would change it
            _set_time(out.fileno(), content_time(crc) if self.content_times else mtime)

    def finish(self) -> None:
        for name, mode, mtime in reversed(self._folder_modes):
            path = os.path.join(self.root, name)
            _set_time(path, mtime)
            os.chmod(path, mode)


def _set_time(file: int | str, mtime: float | None) -> None:
    """The archive's time on a file, unless it is none the system can set (never a refusal)."""
    if mtime is not None:
        with contextlib.suppress(OverflowError, ValueError, OSError):
            os.utime(file, (mtime, mtime))


def _zip_time(info: zipfile.ZipInfo) -> float | None:
    with contextlib.suppress(OverflowError, ValueError):
        return time.mktime((*info.date_time, 0, 0, -1))
    return None


def _extract_zip(path: str, tree: _Tree) -> None:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            _check_name(info.orig_filename)
            mode = info.external_attr >> 16
            _check_mode(info.orig_filename, mode)
            name = _normalize(info.filename)
            if not name:
                continue
            mtime = _zip_time(info)
            if info.is_dir():
                tree.folder(name, mode or 0o755, mtime)
                continue
            # zipfile reads at most file_size bytes and checks the CRC at the end.
            with zf.open(info) as member:
                tree.file(name, info.file_size, mode or 0o644, mtime, member.read)


def _extract_tar_gz(path: str, tree: _Tree) -> None:
    # Members in order: one read of the archive, each member's data right after its header
    # (GzipFile's seeks are forward). Not the stream mode "r|gz", which copies its buffer on every
    # read: twice as slow on 25,000 small files.
    with tarfile.open(path, "r:gz") as tf:
        for member in tf:
            _check_name(member.name)
            _check_tar_type(member)
            name = _normalize(member.name)
            if not name:
                continue
            if member.isdir():
                tree.folder(name, member.mode, member.mtime)
            else:
                data = tf.extractfile(member)
                tree.file(name, member.size, member.mode, member.mtime, data.read)


def content_root(app_dir: str) -> str:
    """Where a php or static site starts in its unpacked archive: the one folder the archive
    holds when it holds nothing else (``zip -r site.zip site/``), else the archive's top.
    A WSGI entry point and a WAR's WEB-INF/ are always at the top (see above)."""
    folder = _one_folder(os.listdir(app_dir), lambda name: os.path.isdir(os.path.join(app_dir, name)))
    return os.path.join(app_dir, folder) if folder else app_dir


def _site_root(entries: dict) -> str:
    """content_root's rule on the archive's names, before it is unpacked: 'site/' or ''."""
    # A top name that is no file entry is a folder (a zip may list only the files in it).
    folder = _one_folder({name.split("/")[0] for name in entries}, lambda top: entries.get(top) is not True)
    return folder + "/" if folder else ""


def _one_folder(top_names: Iterable[str], is_folder: Callable[[str], bool]) -> str | None:
    """The one folder among the top names, when nothing else but archivers' litter is there."""
    names = [name for name in top_names if name not in _ARCHIVER_LITTER]
    return names[0] if len(names) == 1 and is_folder(names[0]) else None
