"""Builds: a code version's dependencies, made once and installed offline on every node.

The first deploy of a version that needs one (a python `requirements.txt`, a php `composer.json`
without `vendor/`: images/conpaas_agent/builds.py) builds it in a sandbox of the cloud's, isolated
like a node, whose only way out is the package proxy (`manage.py up` runs it). The result is
stored by the digest of its inputs, per owner: another version with the same requirements, of
any of the owner's services, reuses it without building. Nodes download it with a signed link,
check its sha256 and unpack it beside the version's code.
"""

import collections
import fcntl
import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.urls import reverse

from images.conpaas_agent import builds as rules
from images.conpaas_agent.archives import ArchiveError, extract_archive
from services import clouds, quotas
from services.choices import Outcome
from services.clouds.sandbox import SandboxError
from services.errors import OperationFailed, QuotaExceeded
from services.models import Event
from versions.models import Build, CodeVersion, build_path
from versions.storage import stored_bytes

BUILD_SALT = "conpaas.build"
BUILD_URL_MAX_AGE = 3600
# What a failed build shows of the installer's output (the operation's error, the event).
FAILURE_LINES = 25
# How often a running build's latest line becomes the operation's progress (seconds).
PROGRESS_EVERY = 0.5
_interpreters: dict[str, str] = {}


def build_fields(version: CodeVersion) -> dict:
    """The instance spec's fields for the version's build ({} when it has none)."""
    if version.build_id is None:
        return {}
    token = signing.dumps(version.build_id, salt=BUILD_SALT)
    return {"build_url": reverse("build-archive", args=[token]), "build_sha256": version.build.sha256}


def build_from_token(token: str) -> Build | None:
    try:
        pk = signing.loads(token, salt=BUILD_SALT, max_age=BUILD_URL_MAX_AGE)
    except signing.BadSignature:
        return None
    return Build.objects.filter(pk=pk).first()


def ensure_build(service, version: CodeVersion, operation=None) -> Build | None:
    """The version's build: the one it has, one of the owner's with the same inputs, or a new one
    made now (its output streaming into the operation's progress and the events). Fails the
    operation with the installer's last lines when the build fails; stores nothing then."""
    if version.build_id is not None and version.build.path.exists():
        return version.build
    if version.needs_build is False:
        return None
    settings.CONPAAS_BUILDS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.CONPAAS_BUILDS, prefix=".unpack-") as tmp:
        app = Path(tmp) / "app"
        try:
            extract_archive(str(version.archive_path), str(app), 2**40)
        except (ArchiveError, OSError) as exc:
            raise OperationFailed(f"the archive of {version.label} could not be read for its build: {exc}") from exc
        plan = rules.plan(service.runtime, str(app))
        if plan is None:
            CodeVersion.objects.filter(pk=version.pk).update(needs_build=False)
            version.needs_build = False
            return None
        cloud = clouds.get_cloud()
        key = plan.key(str(service.owner_id), _interpreter(cloud.ex_node_python), version.sha256)
        with _key_lock(key):
            build = Build.objects.filter(owner_id=service.owner_id, key=key).first()
            if build is None or not build.path.exists():  # a file lost is made again
                build = _make(service, version, plan, key, app, cloud, operation)
            else:
                Event.record(
                    service,
                    "build",
                    f"{version.label} reuses the build of the same {_inputs(plan)} ({_mb(build.size)} MB)",
                    Outcome.SUCCEEDED,
                    operation=operation,
                )
    CodeVersion.objects.filter(pk=version.pk).update(build=build, needs_build=True)
    version.build, version.needs_build = build, True
    return build


def _make(service, version, plan, key: str, app: Path, cloud, operation) -> Build:
    proxy = settings.CONPAAS_PACKAGE_PROXY_URL
    if not proxy:
        raise OperationFailed(
            f"{version.label} needs a build ({_inputs(plan)}) but no package proxy runs: "
            "start the platform with `manage.py up` (or set CONPAAS_PACKAGE_PROXY_URL)"
        )
    label = version.label
    Event.record(service, "build", f"building {label}: {_inputs(plan)}", Outcome.INFO, operation=operation)
    log_path = settings.CONPAAS_BUILDS / f"{key}.log"
    last = collections.deque(maxlen=FAILURE_LINES)
    shown = [0.0]
    began = time.monotonic()
    try:
        box = cloud.ex_build_sandbox(f"build-{key[:10]}", proxy)
    except SandboxError as exc:
        raise OperationFailed(f"the build of {label} could not start: {exc}") from exc
    with box, open(log_path, "w") as log:

        def on_line(line: str) -> None:
            log.write(line + "\n")
            if line.strip():
                last.append(line)
                if operation is not None and time.monotonic() - shown[0] > PROGRESS_EVERY:
                    shown[0] = time.monotonic()
                    operation.set_progress(f"building {label}: {line.strip()}")

        root = box.home / "app" / Path(plan.root).relative_to(app)
        shutil.move(str(app), str(box.home / "app"))
        (box.home / "home").mkdir()
        box.give(box.home / "app")
        box.give(box.home / "home")
        env = rules.environment(str(box.home / "home"), box.index_url)
        for argv in rules.commands(plan, cloud.ex_node_python, box.index_url):
            log.write(f"$ {' '.join(argv)}\n")
            code = box.run(argv, root, env, settings.CONPAAS_BUILD_TIMEOUT, on_line)
            if code != 0:
                output = "\n".join(last)
                Event.record(
                    service,
                    "build",
                    f"the build of {label} failed ({plan.kind} exit {code}); its last lines:\n{output}",
                    Outcome.FAILED,
                    operation=operation,
                )
                raise OperationFailed(
                    f"the build of {label} failed ({_inputs(plan)}; exit {code}); nothing was switched. "
                    f"Its last lines:\n{output}"
                )
        sha256, size = _store(root / plan.output, build_path(key))
    seconds = round(time.monotonic() - began, 1)
    summary = next((line for line in reversed(last) if line.startswith("Successfully installed")), "")[:500]
    try:
        _check_quota(service.owner, size)
    except QuotaExceeded as exc:
        build_path(key).unlink(missing_ok=True)
        raise OperationFailed(f"the build of {label} is not kept: {exc}") from exc
    fields = {"kind": plan.kind, "sha256": sha256, "size": size, "seconds": seconds, "summary": summary}
    build, _ = Build.objects.update_or_create(owner=service.owner, key=key, defaults=fields)
    Event.record(
        service,
        "build",
        f"built {label} in {seconds} s ({_mb(size)} MB){': ' + summary if summary else ''}",
        Outcome.SUCCEEDED,
        operation=operation,
    )
    return build


def _store(tree: Path, target: Path) -> tuple[str, int]:
    """`tree` as a tar.gz at `target` (atomically); its sha256 and size. A build that installed
    nothing stores an empty tree."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            if tree.is_dir():
                for entry in sorted(tree.iterdir()):
                    tar.add(entry, arcname=entry.name)
        digest = hashlib.sha256()
        with open(tmp, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        os.chmod(tmp, 0o640)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return digest.hexdigest(), target.stat().st_size


def _check_quota(owner, adding: int) -> None:
    quotas.check_storage(owner, stored_bytes(owner), adding)


@contextmanager
def _key_lock(key: str):
    """One build per key at a time (two deploys of the same requirements: the second reuses)."""
    with open(settings.CONPAAS_BUILDS / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _interpreter(python: str) -> str:
    if python not in _interpreters:
        _interpreters[python] = rules.interpreter_tag(python)
    return _interpreters[python]


def _inputs(plan) -> str:
    return "requirements.txt" if plan.kind == rules.PIP else "composer install"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f}"
