"""Swap: exchange the versions of production and another environment, health-gated and atomic.

Each environment keeps its sticky settings and its database copies; travelling settings go with
the code version (versions.models.swapped_settings). When that leaves a version with other
values than it runs with now (a sticky setting differs between the two environments), the
version is first started with its new environment's values and health-checked, beside what
serves; only then do the routes flip. Without such a difference the swap is a route flip alone.
"""

from dataclasses import dataclass

from routing.health import wait_healthy
from routing.table import RouterRefused, RoutesNotRestored, flip_or_restore, health_problems, instance_problems, push
from services import operations
from services.choices import OperationKind, Outcome
from services.errors import Conflict, NotFound, OperationFailed
from services.models import Event
from versions.instances import Release, ensure_instances
from versions.models import (
    DEVELOPMENT,
    PRODUCTION,
    Environment,
    changed_settings,
    no_such_environment,
    swapped_settings,
)
from workflows.deploy import retire_unused


class SwapRefused(Conflict):
    """The swap would break production; nothing was changed."""


@dataclass
class SwapPlan:
    """What swapping `other` with production changes: versions, and settings by environment."""

    production: Environment
    other: Environment
    settings: dict  # environment name -> its settings after the swap
    incoming: Release | None  # production's release after the swap
    outgoing: Release | None  # the other environment's

    @property
    def starts_instances(self) -> bool:
        """Whether a version changes values, so that it starts anew before the flip."""
        return any(
            release is not None and release.key != now.settings_key
            for release, now in ((self.incoming, self.other), (self.outgoing, self.production))
        )

    def setting_changes(self, environment: Environment) -> dict[str, dict]:
        """Each setting whose value the environment's instances see change: {from, to, sticky}."""
        before, after = environment.settings, self.settings[environment.name]
        # A swap changes only values: a sticky name keeps its entry, a travelling one is not sticky
        # on either side, so the names changed_settings gives are those whose value changes.
        changes = {}
        for name in changed_settings(before, after):
            old, new = before.get(name), after.get(name)
            changes[name] = {
                "from": old["value"] if old else None,
                "to": new["value"] if new else None,
                "sticky": bool((new or old)["sticky"]),
            }
        return changes

    def describe(self, refusal: str | None = None) -> dict:
        """The plan as the API's dry run, the CLI and the console show it."""
        swapped = {self.production.name: self.other, self.other.name: self.production}
        return {
            "refused": refusal,
            "starts_instances": self.starts_instances,
            "environments": {
                env.name: {
                    "version": {"from": env.version_id, "to": swapped[env.name].version_id},
                    "version_label": {
                        "from": env.version.label if env.version else None,
                        "to": swapped[env.name].version.label if swapped[env.name].version else None,
                    },
                    "settings": self.setting_changes(env),
                }
                for env in (self.production, self.other)
            },
        }


def swap_plan(service, environment_name: str = DEVELOPMENT) -> SwapPlan:
    # Both environments in one query, with their database copies (each Release reads them).
    environments = {
        environment.name: environment
        for environment in Environment.objects.filter(service=service, name__in=(PRODUCTION, environment_name))
        .select_related("version")
        .prefetch_related("database_copies__target")
    }
    production, other = environments.get(PRODUCTION), environments.get(environment_name)
    if other is None or production is None:
        raise NotFound(no_such_environment(service, environment_name))
    production_settings, other_settings = swapped_settings(production.settings, other.settings)
    incoming = Release.of(production, other.version, production_settings) if other.version else None
    outgoing = Release.of(other, production.version, other_settings) if production.version else None
    return SwapPlan(
        production, other, {PRODUCTION: production_settings, other.name: other_settings}, incoming, outgoing
    )


def preview_swap(service, environment_name: str = DEVELOPMENT) -> dict:
    """The dry run: what the swap would change, and why it would be refused now (None: it would not),
    the incoming version's health asked of the routers."""
    plan = swap_plan(service, environment_name)
    problems = health_problems(service, Release.of(plan.other)) if plan.other.version else []
    return plan.describe(swap_refusal(plan.production, plan.other, problems))


def swap(service, environment_name: str = DEVELOPMENT, actor=None) -> dict:
    if not Environment.objects.filter(service=service, name=environment_name).exists():
        raise NotFound(no_such_environment(service, environment_name))
    with operations.holding(service, OperationKind.SWAP, actor, {"environment": environment_name}) as operation:
        plan = swap_plan(service, environment_name)
        production, other = plan.production, plan.other
        problems = instance_problems(service, Release.of(other))[1] if other.version else []
        if refusal := swap_refusal(production, other, problems):
            refuse(service, refusal, actor, operation)
        if plan.starts_instances:
            start_with_new_settings(service, plan, actor, operation)
        flip(service, plan, actor, operation)
        swapped = (
            f"swapped: production now serves {plan.incoming.label}, {other.name} serves {plan.outgoing.label}"
            + settings_summary(plan)
        )
        if plan.starts_instances:
            Event.record(service, "swap", swapped, Outcome.SUCCEEDED, actor, operation)  # before the retiring's
            retire_unused(service, operation)  # each version as it ran before, drained first
        else:
            operations.record_at_end(operation, swapped)  # with the operation's end: one write fewer
    return {PRODUCTION: plan.incoming.version.pk, other.name: plan.outgoing.version.pk}


def start_with_new_settings(service, plan: SwapPlan, actor, operation) -> None:
    """Start each version with the values of the environment it is going to, beside what serves,
    and wait for their health checks; refused (with nothing routed to them) when they fail."""
    try:
        for release in (plan.incoming, plan.outgoing):
            operation.set_progress(f"starting {release.label} with {release.environment.name}'s settings")
            ensure_instances(service, release, operation)
        push(service)
        for release in (plan.incoming, plan.outgoing):
            wait_healthy(service, release)
    except OperationFailed as exc:
        retire_unused(service, operation)
        refuse(service, f"with the settings it would get, {exc}", actor, operation)


def flip(service, plan: SwapPlan, actor, operation) -> None:
    """Both environments' rows, then every router, health-gated; put back as they were on failure."""
    production, other, incoming, outgoing = plan.production, plan.other, plan.incoming, plan.outgoing

    def verdict(release, now: Environment) -> dict:
        # A saved health verdict is about the servers it checked: it moves with them, so the
        # console stays right without asking the routers; new servers have none yet.
        if release.key == now.settings_key:
            return now.health_fields()
        return {"health_problems": None, "health_checked": None, "health_version": None}

    changes = {
        env: {
            "version": release.version,
            "settings": plan.settings[env.name],
            "settings_key": release.key,
            **verdict(release, other if env is production else production),
        }
        for env, release in ((production, incoming), (other, outgoing))
    }
    try:
        flip_or_restore(service, changes, incoming)
    except OperationFailed as exc:
        if isinstance(exc, RoutesNotRestored):
            Event.record(
                service,
                "swap",
                f"could not restore the routes after a failed swap: {exc}",
                Outcome.FAILED,
                actor,
                operation,
            )
            exc = exc.flip_error
        if plan.starts_instances:
            retire_unused(service, operation)
        if isinstance(exc, RouterRefused):
            refuse(service, f"{incoming.label} in {other.name} is not healthy {exc}", actor, operation)
        raise exc


def settings_summary(plan: SwapPlan) -> str:
    """The names (never the values: they may be secrets) of the settings the swap changed."""
    parts = []
    for env in (plan.production, plan.other):
        if changed := plan.setting_changes(env):
            parts.append(f"{env.name}: {', '.join(changed)}")
    return f"; settings changed in {'; '.join(parts)}" if parts else ""


def swap_refusal(production, other, problems: list[str]) -> str | None:
    """Why swapping `other` with `production` is refused (None: it is not); `problems` are the
    incoming version's health problems. The console shows it on the disabled swap button."""
    service = production.service
    if service.is_data:
        return f"{service.name} is a {service.runtime} service: it has no code versions to swap"
    if other.is_production:
        return "choose an environment other than production to swap with"
    if other.version is None:
        return f"{other.name} has no version to swap in; deploy one first"
    if production.version is None:
        return "production has no version yet; deploy one to production first"
    if problems:
        return f"{other.version.label} in {other.name} is not healthy: " + "; ".join(problems)
    return None


def refuse(service, reason: str, actor, operation):
    Event.record(service, "swap", f"swap refused: {reason}", Outcome.FAILED, actor, operation)
    raise SwapRefused(reason)
