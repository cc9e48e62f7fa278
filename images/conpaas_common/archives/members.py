"""What both sides hold every member to, and how a refusal reads: the refusal (``ArchiveError``),
the limits, the archive's kind from its first bytes, the name and file-type checks, and the
messages' formatting."""

from __future__ import annotations

import codecs
import lzma
import re
import stat
import struct
import tarfile
import zipfile
import zlib

MiB = 2**20
#: Members (and archives) no bigger than this are exempt from the ratio check:
#: small, very repetitive files are common and harmless.
RATIO_MIN_BYTES = MiB
_CHUNK = MiB
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
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
