"""Storing code versions: validated first, written once per content, never changed."""

import os
import tempfile

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError, RestrictedError, Sum

from conpaas_common.archives import ArchiveError, Limits, inspect_archive
from services import object_storage, quotas
from services.choices import OperationKind
from services.errors import Conflict, ConpaasError, NotFound, QuotaExceeded
from services.models import Event, Service, active_operations
from versions.models import Build, CodeVersion, archive_path, label_validator


class UploadRefused(ConpaasError):
    """The upload is refused; nothing was stored. The message is shown to the user."""


def upload_limits() -> Limits:
    return Limits(
        max_upload_bytes=settings.CONPAAS_MAX_UPLOAD_MB * 2**20,
        max_expanded_bytes=settings.CONPAAS_ARCHIVE_MAX_EXPANDED_MB * 2**20,
        max_members=settings.CONPAAS_ARCHIVE_MAX_MEMBERS,
        max_ratio=settings.CONPAAS_ARCHIVE_MAX_RATIO,
    )


def store_version(
    service: Service, fileobj, label: str, user, filename: str = "", release_command: str | None = None
) -> CodeVersion:
    """Store an uploaded archive as a code version; `release_command` (a manifest's) overrides the
    Procfile's release: line."""
    if service.is_data:
        raise UploadRefused(f"a {service.runtime} service has no code versions: load a dump into it instead")
    if label:
        try:
            label_validator(label)
        except Exception as exc:
            raise UploadRefused(" ".join(exc.messages)) from None
        if service.versions.filter(label=label).exists():
            raise UploadRefused(f"{service.name} already has a version labelled {label!r}")
    try:
        info = inspect_archive(fileobj, service.runtime, upload_limits(), filename=filename)
    except ArchiveError as exc:
        raise UploadRefused(str(exc)) from None

    check_storage_quota(service.owner, info.sha256, info.size)  # before anything is written
    written = _write_once(fileobj, archive_path(info.sha256, info.kind))
    try:
        with transaction.atomic():
            quotas.lock(service.owner)
            # Again, the owner's quotas locked: a concurrent upload may have taken the room meanwhile.
            check_storage_quota(service.owner, info.sha256, info.size)
            while not label:
                # The next free vN: the counter moves atomically, and skips labels given by hand.
                Service.objects.filter(pk=service.pk).update(version_counter=F("version_counter") + 1)
                label = f"v{Service.objects.values_list('version_counter', flat=True).get(pk=service.pk)}"
                if service.versions.filter(label=label).exists():
                    label = ""
            version = CodeVersion.objects.create(
                service=service,
                label=label,
                sha256=info.sha256,
                size=info.size,
                kind=info.kind,
                entry_point=info.entry_point or "",
                release_command=(info.release or "") if release_command is None else release_command,
                uploaded_by=user,
            )
            Event.record(
                service, "upload", f"uploaded {label} ({info.size} bytes, sha256 {info.sha256[:12]})", actor=user
            )
    except (IntegrityError, QuotaExceeded) as exc:
        if written:  # unless a concurrent upload of the same content has used it meanwhile
            delete_unreferenced_archives([(info.sha256, info.kind)])
        if isinstance(exc, QuotaExceeded):
            raise
        raise UploadRefused(f"{service.name} already has a version labelled {label!r}") from None
    return version


def check_storage_quota(owner, sha256: str, size: int) -> None:
    """The owner's archives and builds, plus the new archive unless the owner already stores the
    same content."""
    known = CodeVersion.objects.filter(service__owner_id=owner.pk, sha256=sha256).exists()
    quotas.check_storage(owner, stored_bytes(owner), 0 if known else size)


def stored_bytes(owner) -> int:
    """What the owner stores: each archive content once (it is stored once), their builds, and
    their storage services' bytes as last counted."""
    archives = dict(CodeVersion.objects.filter(service__owner_id=owner.pk).values_list("sha256", "size").distinct())
    builds = Build.objects.filter(owner_id=owner.pk).aggregate(total=Sum("size"))["total"] or 0
    return sum(archives.values()) + builds + object_storage.stored_bytes(owner)


def _write_once(fileobj, path) -> bool:
    """Write the archive to its content address; False when the same content is already there."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fileobj.seek(0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := fileobj.read(1 << 20):
                out.write(chunk)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)  # atomic: a reader sees the whole archive or none
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def delete_unreferenced_archives(shas_and_kinds) -> None:
    """The archives no version holds any more, and the builds no version uses."""
    for sha256, kind in set(shas_and_kinds):
        if not CodeVersion.objects.filter(sha256=sha256).exists():
            archive_path(sha256, kind).unlink(missing_ok=True)
    delete_unused_builds()


def delete_unused_builds() -> None:
    """Remove the builds no code version uses: each row first, locked (a build being linked to a
    version meanwhile is either kept, or gone before it is linked: versions/builds.py), then its
    files."""
    for pk in Build.objects.filter(versions=None).values_list("pk", flat=True):
        with transaction.atomic():
            build = Build.objects.select_for_update(of=("self",)).filter(pk=pk, versions=None).first()
            if build is None:
                continue
            try:
                build.delete()
            except ProtectedError:
                continue  # linked meanwhile
        build.path.unlink(missing_ok=True)
        (settings.CONPAAS_BUILDS / f"{build.key}.log").unlink(missing_ok=True)


class VersionInUse(Conflict):
    """The version serves an environment, is being deployed, or still runs on a node; it is kept."""


def delete_version(version: CodeVersion, user) -> None:
    service = version.service
    sha_kind = (version.sha256, version.kind)
    label = version.label
    try:
        with transaction.atomic():
            # Taken in the same order as request_deploy (workflows/deploy.py): a deploy asked for
            # meanwhile either sees the version gone or is seen here.
            if not lock_version(version):
                raise NotFound(f"{service.name} has no version with id {version.pk}")
            deploying = active_operations().filter(
                service=service, kind=OperationKind.DEPLOY, params__version=version.pk
            )
            if operation := deploying.order_by("pk").first():
                raise VersionInUse(
                    f"{label} is being deployed by operation #{operation.pk}; try again when it has finished"
                )
            # Django refuses while an environment points at it (PROTECT) or an instance runs it
            # (RESTRICT): checked here, under the lock, for what a deploy already did.
            version.delete()
    except ProtectedError:
        users = ", ".join(version.environments.values_list("name", flat=True))
        raise VersionInUse(f"{label} is in use by {users}; deploy another version there first") from None
    except RestrictedError:
        nodes = ", ".join(sorted(set(version.instances.values_list("node__name", flat=True))))
        raise VersionInUse(
            f"{label} still runs on {nodes} (its retirement did not finish); the next deploy retires it"
        ) from None
    delete_unreferenced_archives([sha_kind])
    Event.record(service, "version.delete", f"deleted version {label}", actor=user)


def lock_version(version: CodeVersion) -> bool:
    """In a transaction: lock the version's row (PostgreSQL; SQLite's IMMEDIATE transactions have
    one writer at a time) until it ends. False when it no longer exists."""
    return CodeVersion.objects.select_for_update().filter(pk=version.pk).exists()
