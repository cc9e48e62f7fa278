"""The runtime rules: the runtimes an archive is checked for, the python entry point (``wsgi.py`` or
the Procfile's web: line), the Procfile's release: line, a php site's pages and composer.json,
and where a php or static site starts (``content_root``)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable

from ..php_platform import composer_problem
from .members import ArchiveError, MiB, _fmt_size, _show

RUNTIMES = frozenset({"python", "java", "php", "static"})
#: Largest Procfile we are willing to read.
MAX_PROCFILE_BYTES = 64 * 1024
#: Largest composer.json we are willing to read (MediaWiki's is 5 KB).
MAX_COMPOSER_JSON_BYTES = MiB
_SPEC_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_]*)?$")
_PROCFILE_LINE_RE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*(.*)$")
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


def content_root(app_dir: str) -> str:
    """Where a php or static site starts in its unpacked archive: the one folder the archive
    holds when it holds nothing else (``zip -r site.zip site/``), else the archive's top.
    A WSGI entry point and a WAR's WEB-INF/ are always at the top (_python_entry_point, inspect_archive)."""
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
