"""What `conpaas push` and `versions upload` send: a file as it is, or a directory packed into a tar.gz.

Packing a directory (docs/cli.md, "What is packed"):
- every regular file and directory under it, in name order, except `.git` (at any depth), the
  `.conpaasignore` at its top, and what that file's rules leave out (`IgnoreRules`);
- a symbolic link to a file inside the directory is packed as a copy of that file, since archives
  hold no links; any other link (out of the directory, to a directory, to nothing) is refused, and
  no link is ever read through to the outside;
- a directory whose only file is a `.war` is that `.war`, uploaded as it is (Java takes a WAR);
- the archive is written to an anonymous temporary file, gone once closed, and the same tree
  gives the same bytes (sorted members, no owner, one fixed time for every member, a gzip header
  without time), so pushing an unchanged tree again, from another clone or after a `touch`, is
  recognised by its sha256, and a manifest applied again finds its versions unchanged."""

import gzip
import hashlib
import os
import re
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from conpaas_cli.errors import CliError

# Every member's time: a file's own time says nothing about its content (a clone, a `touch`),
# and would make the same tree pack to other bytes. 1980-01-01, the earliest a zip holds.
PACKED_MTIME = 315532800

IGNORE_FILE = ".conpaasignore"
ALWAYS_LEFT_OUT = ".git"  # a directory in a checkout, a file in a submodule or worktree
CHUNK = 2**20

# files packed so far, bytes packed so far, bytes to pack in all
PackProgress = Callable[[int, int, int], None]


class PackError(CliError):
    """The directory cannot be packed; nothing was uploaded."""


# --- .conpaasignore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    regex: re.Pattern
    negated: bool
    directories_only: bool


class IgnoreRules:
    """The rules of a `.conpaasignore`, a subset of gitignore's (docs/cli.md lists what is supported).

    Paths are relative to the packed directory, with `/` between names. The last rule that matches
    a path decides; a directory left out is not entered, so nothing under it can be taken back."""

    def __init__(self, text: str = ""):
        self.rules = [rule for line in text.splitlines() if (rule := _rule(line)) is not None]

    def excludes(self, path: str, is_dir: bool) -> bool:
        excluded = False
        for rule in self.rules:
            if (is_dir or not rule.directories_only) and rule.regex.fullmatch(path):
                excluded = not rule.negated
        return excluded


def _rule(line: str) -> Rule | None:
    pattern = line.rstrip(" ")
    if pattern.endswith("\\") and len(pattern) < len(line) and _escapes_last(pattern):
        pattern += " "  # "name\ ": an escaped trailing space is kept
    if not pattern or pattern.startswith("#"):
        return None
    negated = pattern.startswith("!")
    if negated:
        pattern = pattern[1:]
    directories_only = pattern.endswith("/")
    if directories_only:
        pattern = pattern[:-1]
    # A slash at the start or in the middle anchors the pattern to the directory; otherwise it
    # matches at any depth, as if written "**/pattern".
    if "/" in pattern:
        pattern = pattern.removeprefix("/")
    else:
        pattern = "**/" + pattern
    if not pattern or pattern == "**/":
        return None
    return Rule(re.compile(_translate(pattern)), negated, directories_only)


def _escapes_last(text: str) -> bool:
    """True when `text` ends in an odd number of backslashes: the last one escapes what follows."""
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _translate(glob: str) -> str:
    """A gitignore glob as a regular expression matched against a whole relative path."""
    out, i, n = [], 0, len(glob)
    while i < n:
        char = glob[i]
        if glob.startswith("**", i) and (i == 0 or glob[i - 1] == "/"):
            if i + 2 == n:  # "dir/**": everything below dir
                out.append(".*")
                i += 2
                continue
            if glob[i + 2] == "/":  # "**/": no directory or any number of them
                out.append("(?:.*/)?")
                i += 3
                continue
        if char == "*":
            while i < n and glob[i] == "*":  # other runs of stars are one star
                i += 1
            out.append("[^/]*")
            continue
        if char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(glob, i)) is not None:
            out.append(_char_class(glob[i + 1 : end]))
            i = end
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(glob[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(glob: str, start: int) -> int | None:
    """The index of the `]` closing the class opened at `start` (a `]` right after `[`, `[!` or `[^` is a member)."""
    i = start + 1
    if i < len(glob) and glob[i] in "!^":
        i += 1
    if i < len(glob) and glob[i] == "]":
        i += 1
    end = glob.find("]", i)
    return end if end != -1 else None


def _char_class(body: str) -> str:
    negated = body[:1] in ("!", "^")
    if negated:
        body = body[1:]
    members = "".join("\\" + char if char in "\\^[]" else char for char in body)
    return f"[^/{members}]" if negated else f"(?!/)[{members}]"  # a class never matches the slash


# --- scanning the directory ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    name: str  # the member's name in the archive
    source: str | None  # the file whose bytes are packed (a link's target); None for a directory
    mode: int
    size: int


@dataclass
class Tree:
    """What packing a directory would put in the archive, found before anything is written."""

    shown: str  # the directory as the user named it, for messages
    entries: list[Entry]
    left_out: int  # entries that .conpaasignore left out

    @property
    def files(self) -> list[Entry]:
        return [entry for entry in self.entries if entry.source is not None]

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)


def scan(directory: Path) -> Tree:
    """Walk `directory` without following a link, and list what would be packed; `PackError` for
    what cannot be (links out of it, special files, names that are not UTF-8, unreadable folders)."""
    root = os.path.realpath(directory)
    shown = str(directory)
    rules = IgnoreRules(_read_ignore_file(root, os.path.join(shown, IGNORE_FILE)))
    tree = Tree(shown, [], 0)

    def walk(folder: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda child: child.name)
        except OSError as exc:
            raise PackError(f"cannot read {_shown(shown, prefix)}: {exc.strerror}") from None
        for child in children:
            name = prefix + child.name
            if child.name == ALWAYS_LEFT_OUT or name == IGNORE_FILE:
                continue
            info = child.stat(follow_symlinks=False)
            # A link counts as a directory for `dir/` rules when it points to one; only its target's
            # type is asked for, nothing is read through it.
            is_dir = stat.S_ISDIR(info.st_mode) or (stat.S_ISLNK(info.st_mode) and os.path.isdir(child.path))
            if rules.excludes(name, is_dir):
                tree.left_out += 1
                continue
            where = os.path.join(shown, name)
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                raise PackError(f"{where!r}: its name is not valid UTF-8, which archives need") from None
            if stat.S_ISDIR(info.st_mode):
                tree.entries.append(Entry(name, None, 0o755, 0))
                walk(child.path, name + "/")
            elif stat.S_ISREG(info.st_mode):
                tree.entries.append(Entry(name, child.path, _mode(info), info.st_size))
            elif stat.S_ISLNK(info.st_mode):
                tree.entries.append(_linked_file(root, child.path, name, where, shown))
            else:
                kind = _kind(info.st_mode)
                raise PackError(f"{where} is {kind}, which archives cannot hold: add it to {IGNORE_FILE}")

    walk(root, "")
    return tree


def _shown(shown: str, prefix: str) -> str:
    return os.path.join(shown, prefix.rstrip("/")) if prefix else shown


def _read_ignore_file(root: str, shown: str) -> str:
    try:
        fd = os.open(os.path.join(root, IGNORE_FILE), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise PackError(f"cannot read {shown}: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise PackError(f"{shown} is not a file")
        try:
            return file.read().decode("utf-8")
        except UnicodeDecodeError:
            raise PackError(f"{shown} is not UTF-8 text") from None


def _linked_file(root: str, path: str, name: str, where: str, shown: str) -> Entry:
    target = os.readlink(path)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root:
        raise PackError(
            f"{where} is a symbolic link to {target}, outside {shown}: links are never followed out of "
            f"the directory (remove it, or add it to {IGNORE_FILE})"
        )
    try:
        info = os.stat(resolved)
    except OSError:
        raise PackError(f"{where} is a symbolic link to {target}, which does not exist") from None
    if stat.S_ISDIR(info.st_mode):
        raise PackError(
            f"{where} is a symbolic link to the directory {target}: archives hold no links and links to "
            f"directories are not copied (add it to {IGNORE_FILE}, or replace it by the directory)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise PackError(f"{where} is a symbolic link to {_kind(info.st_mode)}, which archives cannot hold")
    return Entry(name, resolved, _mode(info), info.st_size)


def _mode(info: os.stat_result) -> int:
    """Executable or not is what counts: the same tree packs the same whatever the umask."""
    return 0o755 if info.st_mode & 0o111 else 0o644


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --- packing -----------------------------------------------------------------------------------------


def pack(tree: Tree, out: BinaryIO, on_progress: PackProgress | None = None) -> None:
    """Write `tree` as a tar.gz into `out`."""
    total, done = tree.size, 0
    files = 0

    def count(size: int) -> None:
        nonlocal done
        done += size
        if on_progress:
            on_progress(files, done, total)

    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for entry in tree.entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.mtime = entry.mode, PACKED_MTIME
            if entry.source is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                continue
            where = os.path.join(tree.shown, entry.name)
            with _open_file(entry.source, where) as file:
                info.size = os.fstat(file.fileno()).st_size  # its size now, should it have changed since the scan
                try:
                    archive.addfile(info, _Counting(file, count))
                except OSError as exc:
                    raise PackError(f"cannot read {where}: {_reason(exc)} (did it change while packed?)") from None
            files += 1
            count(0)


@contextmanager
def _open_file(path: str | Path, shown: str, packed: bool = True) -> Iterator[BinaryIO]:
    """A regular file, opened without waiting on a FIFO; when `packed`, a file found by the scan,
    opened without following a link, should it have been swapped for one since."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if packed else 0)
    hint = f" (add it to {IGNORE_FILE} to leave it out)" if packed else ""
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise PackError(f"cannot read {shown}: {_reason(exc)}{hint}") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            changed = " any more (did it change while packed?)" if packed else ""
            raise PackError(f"{shown} is neither a file nor a directory{changed}")
        yield file


class _Counting:
    """A file whose reads are counted, so that packing a big file shows progress too."""

    def __init__(self, file: BinaryIO, count: Callable[[int], None]):
        self.file, self.count = file, count

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.count(len(data))
        return data


# --- what is uploaded ------------------------------------------------------------------------------


@dataclass
class Code:
    """An archive ready to upload: at position 0, with its name, size and sha256."""

    file: BinaryIO
    filename: str
    size: int
    sha256: str
    tree: Tree | None = None  # the packed directory; None when a file is uploaded as it is
    war: str | None = None  # the directory's only file, a .war uploaded as it is


@contextmanager
def open_code(path: Path, on_progress: PackProgress | None = None) -> Iterator[Code]:
    """The archive for `path`: the file itself, or the directory packed into a temporary file
    that is gone when the block ends (a directory holding only a .war gives that .war)."""
    if not path.is_dir():
        with _open_file(path, str(path), packed=False) as file:
            yield _code(file, path.name)
        return
    tree = scan(path)
    files = tree.files
    if not files:
        left_out = f" ({tree.left_out} left out by {IGNORE_FILE})" if tree.left_out else ""
        raise PackError(f"{path} has no files to pack{left_out}")
    if len(files) == 1 and files[0].name.lower().endswith(".war"):
        war = files[0]
        with _open_file(war.source, os.path.join(tree.shown, war.name)) as file:
            yield _code(file, os.path.basename(war.name), tree, war.name)
        return
    with tempfile.TemporaryFile(prefix="conpaas-push-") as archive:
        pack(tree, archive, on_progress)
        yield _code(archive, f"{_archive_stem(path)}.tar.gz", tree)


def _code(file: BinaryIO, filename: str, tree: Tree | None = None, war: str | None = None) -> Code:
    file.seek(0)
    digest = hashlib.sha256()
    while chunk := file.read(CHUNK):
        digest.update(chunk)
    size = file.tell()
    file.seek(0)
    return Code(file, filename, size, digest.hexdigest(), tree, war)


def _archive_stem(path: Path) -> str:
    name = Path(os.path.realpath(path)).name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "code"


# --- labels ------------------------------------------------------------------------------------------


def git_label(directory: Path) -> str | None:
    """The short commit of the git checkout `directory` is in, when `git status` shows nothing
    under it (no change, no untracked file); None otherwise, or without git."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # a status must not write the index
        )

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if status.returncode != 0 or status.stdout.strip():
        return None
    return head.stdout.strip() or None


def time_label() -> str:
    """The time now, UTC, as the API shows times: 20250131-123456."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())
