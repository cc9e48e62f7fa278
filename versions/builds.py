"""Builds: a code version's dependencies, made once and installed offline on every node.

The first deploy of a version that needs one (a python `requirements.txt`, a php `composer.json`
without `vendor/`: versions/build_plans.py) builds it in a sandbox of the cloud's, isolated like
a node, whose only way out is the package proxy (`manage.py up` runs it). The build packs what it
installed into one tar.gz, as its own user; once every process of the sandbox is stopped the
platform takes that one file (never following a link), checks its members and stores it by the
digest of its inputs, per owner: another version with the same requirements, of any of the
owner's services, reuses it without building. Nodes download it with a signed link, check its
sha256 and unpack it beside the version's code.
"""

import collections
import fcntl
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse

from conpaas_common.archives import ArchiveError, extract_archive
from services import clouds, quotas
from services.choices import Outcome
from services.clouds.sandbox import SandboxError
from services.errors import OperationFailed, QuotaExceeded
from services.models import Event
from versions import build_plans
from versions.build_plans import BuildPlan, BuildRefused
from versions.models import Build, CodeVersion, build_path
from versions.storage import stored_bytes

BUILD_SALT = "conpaas.build"
BUILD_URL_MAX_AGE = 3600
# What a failed build shows of the installer's output (the operation's error, the event).
FAILURE_LINES = 25
# How often a running build's latest line becomes the operation's progress (seconds).
PROGRESS_EVERY = 0.5
# The most a build's output may take stored (the owner's storage quota counts it too).
MAX_BUILD_BYTES = 2 * 2**30
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
    operation with the reason (the installer's last lines) when it cannot; stores nothing then."""
    if version.build_id is not None and version.build.path.exists():
        return version.build
    if version.needs_build is False:
        return None
    settings.CONPAAS_BUILDS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.CONPAAS_BUILDS, prefix=".unpack-") as tmp:
        app = Path(tmp) / "app"
        try:
            extract_archive(str(version.archive_path), str(app), 2**40)
            plan = build_plans.plan(service.runtime, str(app))
        except (ArchiveError, OSError, BuildRefused) as exc:
            raise _failed(service, version, f"{version.label} cannot be built: {exc}", operation) from exc
        if plan is None:
            CodeVersion.objects.filter(pk=version.pk).update(needs_build=False)
            version.needs_build = False
            return None
        cloud = clouds.get_cloud()
        key = plan.key(str(service.owner_id), _interpreter(cloud.ex_node_python), version.sha256)
        with _key_lock(key, operation):
            build = _link_stored(version, key)
            if build is not None:
                message = f"{version.label} reuses the build of the same {plan.what} ({_mb(build.size)} MB)"
                Event.record(service, "build", message, Outcome.SUCCEEDED, operation=operation)
            else:
                build = _make(service, version, plan, key, app, cloud, operation)
    version.build, version.needs_build = build, True
    return build


def _link_stored(version: CodeVersion, key: str) -> Build | None:
    """The owner's stored build of `key`, now the version's; None when there is none (or its file
    is gone). Locked against delete_unused_builds, which either removes it first or sees it used."""
    with transaction.atomic():
        build = Build.objects.select_for_update().filter(owner_id=version.service.owner_id, key=key).first()
        if build is None or not build.path.exists():
            return None
        CodeVersion.objects.filter(pk=version.pk).update(build=build, needs_build=True)
        return build


def _make(service, version, plan: BuildPlan, key: str, app: Path, cloud, operation) -> Build:
    label, proxy = version.label, settings.CONPAAS_PACKAGE_PROXY_URL
    if not proxy:
        raise _failed(
            service,
            version,
            f"{label} needs a build ({plan.what}) but no package proxy runs: start the platform with "
            "`manage.py up` (or set CONPAAS_PACKAGE_PROXY_URL)",
            operation,
        )
    Event.record(service, "build", f"building {label}: {plan.what}", Outcome.INFO, operation=operation)
    last = collections.deque(maxlen=FAILURE_LINES)
    shown = [0.0]
    began = time.monotonic()
    log_path = settings.CONPAAS_BUILDS / f"{key}.log"
    try:
        box = cloud.ex_build_sandbox(f"build-{key[:10]}", proxy)
    except SandboxError as exc:
        raise _failed(service, version, f"the build of {label} could not start: {exc}", operation) from exc
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
        for folder in ("home", "home/tmp"):
            (box.home / folder).mkdir()
        box.give(box.home / "app")
        box.give(box.home / "home")
        env = build_plans.environment(str(box.home / "home"), box.index_url)
        packed = box.home / "home" / build_plans.PACKED
        for argv in build_plans.commands(plan, cloud.ex_node_python, box.index_url, str(packed)):
            log.write(f"$ {' '.join(argv[:3])} …\n")
            code = box.run(argv, root, env, settings.CONPAAS_BUILD_TIMEOUT, on_line)
            if code != 0:
                log_path.unlink(missing_ok=True)
                output = "\n".join(last)
                raise _failed(
                    service,
                    version,
                    f"the build of {label} failed ({plan.what}; exit {code}); nothing was switched. "
                    f"Its last lines:\n{output}",
                    operation,
                )
        try:  # every process of the sandbox is stopped: nothing changes the file while it is read
            sha256, size = _take(packed, build_path(key), _room_left(service.owner))
        except (QuotaExceeded, BuildRefused) as exc:
            log_path.unlink(missing_ok=True)
            raise _failed(service, version, f"the build of {label} is not kept: {exc}", operation) from exc
    seconds = round(time.monotonic() - began, 1)
    summary = next((line for line in reversed(last) if line.startswith("Successfully installed")), "")[:500]
    fields = {"kind": plan.kind, "sha256": sha256, "size": size, "seconds": seconds, "summary": summary}
    with transaction.atomic():  # made and used in one step: delete_unused_builds never sees it unused
        build, _ = Build.objects.update_or_create(owner=service.owner, key=key, defaults=fields)
        CodeVersion.objects.filter(pk=version.pk).update(build=build, needs_build=True)
    Event.record(
        service,
        "build",
        f"built {label} in {seconds} s ({_mb(size)} MB){': ' + summary if summary else ''}",
        Outcome.SUCCEEDED,
        operation=operation,
    )
    return build


def _failed(service, version, message: str, operation) -> OperationFailed:
    Event.record(service, "build", message, Outcome.FAILED, operation=operation)
    return OperationFailed(message)


def _room_left(owner) -> tuple[int, int]:
    """How many bytes the owner's storage quota leaves for a build (at most MAX_BUILD_BYTES), and
    the quota in MB."""
    quota_mb = quotas.limit(owner, "storage_mb")
    return max(0, min(MAX_BUILD_BYTES, quota_mb * 2**20 - stored_bytes(owner))), quota_mb


def _take(packed: Path, target: Path, room: tuple[int, int]) -> tuple[str, int]:
    """Copy the build's packed result to `target` (atomically): a regular file of the sandbox,
    opened without following a link, at most `room` bytes, holding folders and files only.
    Its sha256 and size."""
    try:
        fd = os.open(packed, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise BuildRefused(f"its result is missing ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise BuildRefused("its result is not a plain file")
        left, quota_mb = room
        if info.st_size > left:
            raise QuotaExceeded(
                f"quota exceeded: storage_mb ({quota_mb}) — the build takes {_mb(info.st_size)} MB and "
                f"{_mb(left)} MB are left"
            )
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".build-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            _check_members(tmp)
            os.chmod(tmp, 0o640)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    return digest.hexdigest(), info.st_size


def _check_members(path: str) -> None:
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = member.name
                if not (member.isfile() or member.isdir()) or name.startswith("/") or ".." in name.split("/"):
                    raise BuildRefused(f"its result holds {name!r}, which is no plain file or folder")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BuildRefused(f"its result is no readable tar.gz ({exc})") from exc


def forget_interrupted_builds() -> None:
    """At start: the sandboxes and half-written files of builds a stop interrupted."""
    clouds.get_cloud().ex_release_sandboxes()
    for leftover in settings.CONPAAS_BUILDS.glob(".unpack-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in settings.CONPAAS_BUILDS.glob(".build-*"):
        leftover.unlink(missing_ok=True)


@contextmanager
def _key_lock(key: str, operation):
    """One build per key at a time: a second deploy of the same requirements waits for the first,
    then reuses its build; at most the build time-out, then it fails saying so."""
    deadline = time.monotonic() + settings.CONPAAS_BUILD_TIMEOUT + 60
    with open(settings.CONPAAS_BUILDS / f".{key}.lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise OperationFailed("another deploy has been building the same requirements too long") from None
                if operation is not None:
                    operation.set_progress("waiting for another deploy's build of the same requirements")
                time.sleep(1)
        yield


def _interpreter(python: str) -> str:
    if python not in _interpreters:
        _interpreters[python] = build_plans.interpreter_tag(python)
    return _interpreters[python]


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f}"
