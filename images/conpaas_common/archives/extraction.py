"""Unpacking a staged archive on a node (the agent): ``extract_archive`` checks each member as
``inspect_archive`` does before it writes it, and can give served files a time derived from
their content (``content_time``)."""

from __future__ import annotations

import contextlib
import os
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable

from .members import (
    _CHUNK,
    _READ_ERRORS,
    ArchiveError,
    _check_mode,
    _check_name,
    _check_tar_type,
    _corrupt,
    _fmt_size,
    _normalize,
    _show,
    _sniff,
)

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
