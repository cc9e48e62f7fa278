"""Preview databases: an environment's own copy of each database its service links.

A copy is made from production's database (the linked data service's own) at the environment's
first deploy with `database_copy` on, on the same server, and kept across later deploys (a
preview's data is not lost by deploying again); it is dropped with the environment, when the copy
is turned off, and for a link that is removed. A swap moves no data: each environment keeps its
copies, as it keeps its sticky settings (workflows.swap)."""

import time

from django.conf import settings
from django.db import IntegrityError, transaction

from services import database_copies
from services.choices import OperationKind, Outcome, Runtime
from services.errors import OperationFailed
from services.models import Event, active_operations
from versions.instances import link_variable
from versions.models import DatabaseCopy, Environment

# Two environments of different services may copy the same database at once: each reserves a
# name with the unique (target, name) row first, and tries another on a clash.
RESERVE_ATTEMPTS = 5


def ensure_copies(environment: Environment, operation) -> dict[str, str]:
    """`environment`'s copy of each data service its service links, made where missing; returns
    link variable -> copy name, as a versions.instances.Release takes them."""
    service = environment.service
    # A storage service is no database: an environment shares its service's bucket.
    targets = [
        link.target
        for link in service.links.select_related("target")
        if link.target.is_data and link.target.runtime != Runtime.STORAGE
    ]
    drop_copies(environment, operation, keep=targets)
    copies = {}
    for target in targets:
        copy = DatabaseCopy.objects.filter(environment=environment, target=target).first()
        if copy is None:
            copy = make(environment, target, operation)
        copies[link_variable(target)] = copy.name
    return copies


def make(environment: Environment, target, operation) -> DatabaseCopy:
    service = environment.service
    wait_for_loads(target, operation)
    copy = reserve(environment, target)
    operation.set_progress(f"copying {target.name}'s database for {environment.name}")
    began = time.monotonic()
    try:
        database_copies.make_copy(target, copy.name)
    except BaseException as exc:
        copy.delete()
        database_copies.drop_copy(target, copy.name)
        if isinstance(exc, OperationFailed):
            Event.record(
                service,
                "database.copy",
                f"could not copy {target.name} for {environment.name}: {exc}",
                Outcome.FAILED,
                operation=operation,
            )
        raise
    Event.record(
        service,
        "database.copy",
        f"{environment.name} got its own copy of {target.name}'s database (in {time.monotonic() - began:.1f} s)",
        Outcome.SUCCEEDED,
        operation=operation,
    )
    return copy


def wait_for_loads(target, operation) -> None:
    """A copy is of production's data: a dump still loading into it (an application applied at
    once loads its database beside the first deploys) is waited for."""
    deadline = time.monotonic() + settings.CONPAAS_LOAD_WAIT
    loading = active_operations().filter(service=target, kind=OperationKind.LOAD)
    while loading.exists():
        if time.monotonic() > deadline:
            raise OperationFailed(
                f"a dump is still loading into {target.name}; deploy again once it is loaded to copy it"
            )
        operation.set_progress(f"waiting for the dump loading into {target.name} before copying it")
        time.sleep(1)


def reserve(environment: Environment, target) -> DatabaseCopy:
    for _ in range(RESERVE_ATTEMPTS):
        taken = set(DatabaseCopy.objects.filter(target=target).values_list("name", flat=True))
        try:
            with transaction.atomic():
                name = database_copies.copy_name(target, taken)
                return DatabaseCopy.objects.create(environment=environment, target=target, name=name)
        except IntegrityError:
            continue
    raise OperationFailed(f"could not find a free name for a copy of {target.name}; try again")


def drop_copies(environment: Environment, operation=None, keep=()) -> None:
    """Drop `environment`'s copies (of the targets not in `keep`) from their servers, then forget them."""
    for copy in environment.database_copies.exclude(target__in=keep).select_related("target"):
        database_copies.drop_copy(copy.target, copy.name)
        copy.delete()
        Event.record(
            environment.service,
            "database.copy",
            f"dropped {environment.name}'s copy of {copy.target.name}'s database",
            Outcome.SUCCEEDED,
            operation=operation,
        )
