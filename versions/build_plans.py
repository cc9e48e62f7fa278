"""What a code version's build runs (versions/builds.py), and what its result depends on.

A python version with a ``requirements.txt`` needs its packages (``pip install --target``); a php
site with a ``composer.json`` and no ``vendor/`` needs ``composer install --no-dev``. Each step is a
program and its arguments, run in the build's sandbox as its user; the last one packs what the
build installed into one tar.gz there, as that user, so the platform only ever reads that file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sysconfig
from dataclasses import dataclass

from conpaas_common.archives import content_root

PIP, COMPOSER = "pip", "composer"
# A requirements.txt, composer.json or composer.lock larger than this is refused.
MAX_INPUT_BYTES = 1024 * 1024
# What the packing step writes in the sandbox's home, for the platform to take.
PACKED = "build.tar.gz"
# A requirement line that is only a project name, extras, versions and markers (PEP 508, no URL).
_NAMED_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[^\]]*\])?\s*([<>=!~(;,].*)?$")

# The packing step (run by the build's own interpreter, as the build's user): the installed tree as
# a tar.gz of folders and regular files only. A symbolic link (composer's vendor/bin) or anything
# else is left out and said, so nothing a node refuses is ever stored.
PACK = """\
import os, sys, tarfile
tree, out = sys.argv[1], sys.argv[2]
with tarfile.open(out, "w:gz", compresslevel=6) as tar:
    if os.path.isdir(tree) and not os.path.islink(tree):
        for folder, dirs, files in os.walk(tree):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(folder, name)
                member = os.path.relpath(path, tree)
                if os.path.islink(path):
                    print(f"left out {member}: a symbolic link")
                    if name in dirs:
                        dirs.remove(name)
                elif os.path.isdir(path) or os.path.isfile(path):
                    tar.add(path, arcname=member, recursive=False)
                else:
                    print(f"left out {member}: not a file")
"""


class BuildRefused(Exception):
    """The version cannot be built as it is; the message says why."""


@dataclass(frozen=True)
class BuildPlan:
    """What a version's build runs, and what its result depends on."""

    kind: str  # PIP | COMPOSER
    root: str  # where the build runs, in the unpacked archive
    inputs: bytes  # the files the result depends on (requirements.txt, composer.json + .lock)
    needs_archive: bool  # the inputs may refer to other files of the archive (a local wheel, a path repo)
    output: str  # what is stored, relative to the build's root (pip: a directory of its own)

    @property
    def what(self) -> str:
        return "requirements.txt" if self.kind == PIP else "composer install"

    def key(self, owner: str, interpreter: str, archive_sha256: str) -> str:
        """The build's address: same owner, inputs and interpreter give the same build."""
        digest = hashlib.sha256()
        for part in (self.kind, owner, interpreter, archive_sha256 if self.needs_archive else ""):
            digest.update(part.encode() + b"\0")
        digest.update(self.inputs)
        return digest.hexdigest()


def _read(path: str, shown: str) -> bytes | None:
    if not os.path.isfile(path):
        return None
    if os.path.getsize(path) > MAX_INPUT_BYTES:
        raise BuildRefused(f"{shown} is larger than {MAX_INPUT_BYTES // 1024} KB")
    with open(path, "rb") as fh:
        return fh.read()


def requirements_refer_to_files(text: str) -> bool:
    """Whether a line may name something besides the index's projects (a file, a URL, another
    requirements file, an option): then the build depends on the whole archive."""
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#") and not _NAMED_REQUIREMENT.match(line):
            return True
    return False


def composer_refers_to_files(manifest: bytes) -> bool:
    try:
        repositories = json.loads(manifest).get("repositories") or []
    except (ValueError, AttributeError):
        return True
    if isinstance(repositories, dict):
        repositories = list(repositories.values())
    return any(isinstance(r, dict) and r.get("type") in ("path", "artifact") for r in repositories)


def plan(runtime: str, app_dir: str) -> BuildPlan | None:
    """The build a version of `runtime` unpacked at `app_dir` needs, or None (BuildRefused)."""
    if runtime == "python":
        requirements = _read(os.path.join(app_dir, "requirements.txt"), "requirements.txt")
        if requirements is None:
            return None
        local = requirements_refer_to_files(requirements.decode(errors="replace"))
        return BuildPlan(PIP, app_dir, requirements, local, os.path.join(".conpaas-build", "site"))
    if runtime == "php":
        root = content_root(app_dir)
        manifest = _read(os.path.join(root, "composer.json"), "composer.json")
        if manifest is None or os.path.lexists(os.path.join(root, "vendor")):
            return None
        lock = _read(os.path.join(root, "composer.lock"), "composer.lock") or b""
        return BuildPlan(COMPOSER, root, manifest + b"\0" + lock, composer_refers_to_files(manifest), "vendor")
    return None


def interpreter_tag(python: str) -> str:
    """What a python build's result depends on besides its inputs (the interpreter's ABI and
    platform), for the interpreter nodes run: ``/usr/bin/python3`` is asked, not assumed."""
    code = "import sys, sysconfig; print(sys.implementation.cache_tag, sysconfig.get_platform())"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def pip_wheel(python: str) -> str:
    """pip as a wheel that `python` runs directly (``python pip.whl/pip install``): Debian's
    python3-venv ships it under /usr/share/python-wheels, other Pythons under ensurepip. A build
    needs no virtualenv with pip in it (creating one costs seconds)."""
    candidates = glob.glob("/usr/share/python-wheels/pip-*.whl") if python.startswith("/usr/bin/") else []
    candidates += glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "ensurepip", "_bundled", "pip-*.whl"))
    return sorted(candidates)[-1] if candidates else ""


def commands(build: BuildPlan, python: str, index_url: str, packed: str) -> list[list[str]]:
    """The build's steps, each a program and its arguments, run in `build.root`; the last packs
    the result into `packed`."""
    if build.kind == PIP:
        wheel = pip_wheel(python)
        pip = [python, f"{wheel}/pip"] if wheel else [python, "-m", "pip"]
        host = index_url.split("//", 1)[-1].split("/", 1)[0]
        install = [
            *pip, "install", "--no-input", "--disable-pip-version-check", "--no-cache-dir",
            "--progress-bar", "off", "--no-warn-script-location", "--target", build.output,
            "--index-url", index_url, "--trusted-host", host, "-r", "requirements.txt",
        ]  # fmt: skip
    else:
        install = [
            "composer", "install", "--no-dev", "--no-interaction", "--no-progress", "--prefer-dist",
            "--optimize-autoloader",
        ]  # fmt: skip
    return [install, [python, "-c", PACK, build.output, packed]]


def environment(home: str, index_url: str) -> dict[str, str]:
    """The build's whole environment: nothing of the platform's own; its temporary files in its
    own home, which goes with the sandbox."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": os.path.join(home, "tmp"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_DEFAULT_TIMEOUT": "120",
        # Its only way out is the package proxy, on this host: two tries (after 0 and 0.5 s) ride
        # out a blip of the index behind it; pip's five (7.5 s of backoff) only made a build
        # that cannot reach a file fail later.
        "PIP_RETRIES": "2",
        "PIP_INDEX_URL": index_url,
        "COMPOSER_HOME": os.path.join(home, ".composer"),
        "COMPOSER_NO_INTERACTION": "1",
        # Copies of path repositories, not links: a build holds no symbolic link (archive rules).
        "COMPOSER_MIRROR_PATH_REPOS": "1",
    }
