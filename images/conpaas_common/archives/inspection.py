"""Checking an upload before anything is stored (the control plane): ``inspect_archive`` reads it
once to hash it, then decompresses every member of the zip or tar.gz, counting real bytes
against the limits, and applies the runtime's rules."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from .members import (
    _CHUNK,
    _READ_ERRORS,
    RATIO_MIN_BYTES,
    ArchiveError,
    MiB,
    _check_mode,
    _check_name,
    _check_tar_type,
    _corrupt,
    _fmt_ratio,
    _fmt_size,
    _normalize,
    _show,
    _sniff,
    _subject,
)
from .rules import (
    _ARCHIVER_LITTER,
    MAX_COMPOSER_JSON_BYTES,
    MAX_PROCFILE_BYTES,
    RUNTIMES,
    _check_php_site,
    _python_entry_point,
    procfile_release,
)

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZIP_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}


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
