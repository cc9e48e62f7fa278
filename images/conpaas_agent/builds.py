"""Builds: what a code version needs besides its archive, made once and installed offline.

A python version with a ``requirements.txt`` needs its packages (``pip install --target``); a php
site with a ``composer.json`` and no ``vendor/`` needs ``composer install --no-dev``. The control
plane runs that once per version, in a sandbox whose only way out is the package proxy, and
stores the result (a tar.gz of the installed tree); every node unpacks it next to the version's
code without any network. These are the rules both sides share. Standard library only.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sysconfig
import urllib.parse
from dataclasses import dataclass

from .archives import content_root

PIP, COMPOSER = "pip", "composer"
# requirements.txt and composer files larger than this are not read (and refused by the build).
MAX_INPUT_BYTES = 1024 * 1024
# Lines of a requirements file that name files of the archive (or other files): the build then
# depends on the archive itself, not on the requirements alone.
_LOCAL_PREFIXES = (
    *("-r", "-c", "-e", "-f", "--requirement", "--constraint", "--editable", "--find-links"),
    *(".", "/", "file:"),
)


@dataclass(frozen=True)
class BuildPlan:
    """What a version's build runs, and what its result depends on."""

    kind: str  # PIP | COMPOSER
    root: str  # where the build runs, in the unpacked archive
    inputs: bytes  # the files the result depends on (requirements.txt, composer.json + .lock)
    needs_archive: bool  # the inputs refer to other files of the archive (a local wheel, a path repo)
    output: str  # what is stored, relative to the build's root (pip: a directory of its own)

    def key(self, owner: str, interpreter: str, archive_sha256: str) -> str:
        """The build's address: same owner, inputs and interpreter give the same build."""
        digest = hashlib.sha256()
        for part in (self.kind, owner, interpreter, archive_sha256 if self.needs_archive else ""):
            digest.update(part.encode() + b"\0")
        digest.update(self.inputs)
        return digest.hexdigest()


def _read(path: str) -> bytes | None:
    try:
        if os.path.getsize(path) > MAX_INPUT_BYTES:
            return None
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def requirements_refer_to_files(text: str) -> bool:
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith(_LOCAL_PREFIXES) or "@ file:" in line:
            return True
    return False


def composer_refers_to_files(manifest: bytes) -> bool:
    try:
        repositories = json.loads(manifest).get("repositories") or []
    except (ValueError, AttributeError):
        return False
    if isinstance(repositories, dict):
        repositories = list(repositories.values())
    return any(isinstance(r, dict) and r.get("type") in ("path", "artifact") for r in repositories)


def plan(runtime: str, app_dir: str) -> BuildPlan | None:
    """The build a version of `runtime` unpacked at `app_dir` needs, or None."""
    if runtime == "python":
        requirements = _read(os.path.join(app_dir, "requirements.txt"))
        if requirements is None:
            return None
        local = requirements_refer_to_files(requirements.decode(errors="replace"))
        return BuildPlan(PIP, app_dir, requirements, local, os.path.join(".conpaas-build", "site"))
    if runtime == "php":
        root = content_root(app_dir)
        manifest = _read(os.path.join(root, "composer.json"))
        if manifest is None or os.path.exists(os.path.join(root, "vendor")):
            return None
        lock = _read(os.path.join(root, "composer.lock")) or b""
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


def commands(build: BuildPlan, python: str, index_url: str) -> list[list[str]]:
    """The build's steps, each a program and its arguments, run in `build.root`."""
    if build.kind == PIP:
        wheel = pip_wheel(python)
        pip = [python, f"{wheel}/pip"] if wheel else [python, "-m", "pip"]
        return [
            [
                *pip,
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--no-cache-dir",
                "--progress-bar",
                "off",
                "--no-warn-script-location",
                "--target",
                build.output,
                "--index-url",
                index_url,
                "--trusted-host",
                urllib.parse.urlsplit(index_url).netloc,
                "-r",
                "requirements.txt",
            ]  # fmt: skip
        ]
    return [
        [
            "composer",
            "install",
            "--no-dev",
            "--no-interaction",
            "--no-progress",
            "--prefer-dist",
            "--optimize-autoloader",
        ]  # fmt: skip
    ]


def environment(home: str, index_url: str) -> dict[str, str]:
    """The build's whole environment: nothing of the platform's own."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PIP_DEFAULT_TIMEOUT": "120",
        "PIP_INDEX_URL": index_url,
        "COMPOSER_HOME": os.path.join(home, ".composer"),
        "COMPOSER_NO_INTERACTION": "1",
        # Copies of path repositories, not links: a build holds no symbolic link (archive rules).
        "COMPOSER_MIRROR_PATH_REPOS": "1",
    }
