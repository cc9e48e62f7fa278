"""Per-user quotas: the one rulebook that creating a service, adding an environment, scaling and
uploading a version all call before they store anything.

A quota belongs to the owner of what it counts (a staff user acting on someone's service spends
the owner's quota); staff users have quotas like everyone else, raised by an operator in the
admin. A request that would go past a quota is refused with QuotaExceeded (403), naming the
quota and its value. A user already over a quota (an operator lowered it) may still shrink."""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, Q

from services.choices import NodeState, ServiceState
from services.errors import QuotaExceeded
from services.models import GONE, Quota, Service

ASK = "or ask an operator to raise your quota"


def limit(user, name: str) -> int:
    """The user's quota `name`: their override in the admin, else the installation's default."""
    override = Quota.objects.filter(user_id=user.pk).values_list(name, flat=True).first()
    return override if override is not None else getattr(settings, f"CONPAAS_QUOTA_{name.upper()}")


def lock(user) -> None:
    """Called in the transaction that checks and writes: serializes one user's quota checks with
    their writes (a lock on the user's row on PostgreSQL; on SQLite every transaction is IMMEDIATE,
    settings.py, so one writes at a time from its start), so two concurrent requests cannot both
    take the last place. tests/api/test_races.py races them on both."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).exists()


def _refuse(name: str, value: int, reason: str):
    raise QuotaExceeded(f"quota exceeded: {name} ({value}) — {reason}")


def check_new_service(owner) -> None:
    """A new service counts one service and one node (its proxy+backend node)."""
    allowed = limit(owner, "services")
    # A service whose deletion was requested is on its way out: it no longer counts.
    have = Service.objects.filter(owner_id=owner.pk).exclude(state=ServiceState.DELETING).count()
    if have + 1 > allowed:
        _refuse("services", allowed, f"you have {have} services; delete one {ASK}")
    check_nodes(owner, None, 1)


def node_counts(owner) -> dict[int, int]:
    """The nodes each of the owner's services holds or is about to hold, by service id.

    A service counts the larger of its live nodes and its desired backend nodes: a new service
    counts its first node before it boots, a service scaling up counts its target at once, one
    scaling down keeps counting its nodes until they are gone. A node that failed to boot holds
    nothing (the next scale removes it); a service being deleted counts only what still runs."""
    # A scratch node (a backup's verification) is the platform's, not the owner's.
    live = Count("nodes", filter=~Q(nodes__state__in=[*GONE, NodeState.FAILED]) & Q(nodes__scratch=False))
    rows = Service.objects.filter(owner_id=owner.pk).annotate(live=live)
    return {
        pk: live if state == ServiceState.DELETING else max(live, desired)
        for pk, state, desired, live in rows.values_list("pk", "state", "backend_nodes", "live")
    }


def nodes_left(owner, service: Service) -> int:
    """The most nodes `service` may hold under its owner's node quota, the other services' counted."""
    counts = node_counts(owner)
    counts.pop(service.pk, None)
    return limit(owner, "nodes") - sum(counts.values())


def check_nodes(owner, service: Service | None, after: int) -> None:
    """`service` (None: a new one) would hold `after` nodes."""
    counts = node_counts(owner)
    before = counts.pop(service.pk, 0) if service else 0
    if after <= before:
        return
    allowed = limit(owner, "nodes")
    have = sum(counts.values()) + before
    total = have - before + after
    if total > allowed:
        _refuse(
            "nodes",
            allowed,
            f"your services have {have} nodes and this would make {total}; scale a service down {ASK}",
        )


def check_application(owner, new_nodes: list[int], scaled: dict[int, int], removed: list[int]) -> None:
    """A manifest, as a whole, before any of it is applied: services created (each holding
    `new_nodes[i]` backend nodes), existing ones scaled (`scaled`: service id -> backend nodes),
    and `removed` (service ids) on their way out. The same counts as the single requests', so an
    apply is refused at once rather than half-way."""
    allowed = limit(owner, "services")
    have = Service.objects.filter(owner_id=owner.pk).exclude(state=ServiceState.DELETING).count()
    after = have - len(removed) + len(new_nodes)
    if new_nodes and after > allowed:
        _refuse("services", allowed, f"you have {have} services and this manifest would make {after}; {ASK}")
    counts = node_counts(owner)
    have = sum(counts.values())
    for pk, nodes in scaled.items():
        counts[pk] = max(counts.get(pk, 0), nodes)  # scaling down counts until the nodes are gone
    total = sum(counts.values()) + sum(new_nodes)
    allowed = limit(owner, "nodes")
    if total > have and total > allowed:
        _refuse("nodes", allowed, f"your services have {have} nodes and this manifest would make {total}; {ASK}")


def check_new_environment(service: Service) -> None:
    allowed = limit(service.owner, "environments")
    have = service.environments.count()
    if have + 1 > allowed:
        # Environments cannot be deleted in this release: only an operator makes room.
        _refuse("environments", allowed, f"{service.name} has {have} environments; ask an operator to raise your quota")


def check_storage(owner, used_bytes: int, adding_bytes: int) -> None:
    """`used_bytes`: the owner's stored archives, each distinct content once; `adding_bytes`: the new one."""
    if adding_bytes <= 0:
        return
    allowed = limit(owner, "storage_mb")
    if used_bytes + adding_bytes > allowed * 2**20:
        _refuse(
            "storage_mb",
            allowed,
            f"your archives take {_mb(used_bytes)} MB and this one {_mb(adding_bytes)} MB; "
            f"delete versions you no longer use {ASK}",
        )


def check_storage_room(owner, used_bytes: int, what: str) -> None:
    """Room left for `what` (a new bucket: its bytes come later, written straight to the store)."""
    allowed = limit(owner, "storage_mb")
    if used_bytes >= allowed * 2**20:
        _refuse(
            "storage_mb",
            allowed,
            f"your archives, builds and storage services take {_mb(used_bytes)} MB: no room for {what}; "
            f"delete objects or versions you no longer use {ASK}",
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f}"
