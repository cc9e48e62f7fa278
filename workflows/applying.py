"""Applying a manifest: converge an application to what its manifest says.

One walk over the differences makes both the plan and the changes: each difference is a line
of the plan (created, changed, removed) with the step that makes it, and a dry run returns the
lines without taking the steps, so a plan never disagrees with what an apply does. Every check
that can refuse (files missing or invalid, a name taken outside the application, a runtime or a
stored version that would change) runs before the first step: a refused manifest changes
nothing. The steps are the platform's own workflows (create, upload, add an environment,
deploy, scale, delete), so quotas and operations apply as they do to single requests.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction

from conpaas_common.archives import ArchiveError, inspect_archive
from services import quotas
from services.choices import DATA_RUNTIMES, OperationKind, OperationState, ServiceState
from services.models import Application, Event, Operation, Service
from versions.models import Environment, changed_settings
from versions.storage import store_version, upload_limits
from workflows import backups, lifecycle
from workflows.data_services import request_load
from workflows.deploy import request_deploy
from workflows.environments import add_environment
from workflows.links import set_links
from workflows.manifest import Manifest, ManifestInvalid, ServiceSpec
from workflows.scaling import request_scale


@dataclass
class Plan:
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    steps: list[Callable[[], Operation | None]] = field(default_factory=list, repr=False)

    def add(self, kind: str, line: str, step: Callable[[], Operation | None]) -> None:
        getattr(self, kind).append(line)
        self.steps.append(step)

    @property
    def empty(self) -> bool:
        return not self.steps


@dataclass
class Applied:
    application: Application | None
    plan: Plan
    dry_run: bool
    operations: list[Operation] = field(default_factory=list)


def apply(owner, manifest: Manifest, archives: dict, dry_run: bool = False) -> Applied:
    """Converge `owner`'s application to `manifest`; `archives` maps each path the manifest names
    (as written) to an open file. Returns the plan, and the operations started unless `dry_run`."""
    application = Application.objects.filter(owner=owner, name=manifest.application).first()
    current = {s.name: s for s in application.services.all()} if application else {}
    infos = check(owner, manifest, archives, current)
    plan = Plan()
    ref = {"application": application}
    if application is None:
        plan.add("created", f"application {manifest.application}", lambda: create_application(owner, manifest, ref))
    services = {}  # name -> Service, filled as steps create them
    for spec in manifest.ordered():
        plan_service(owner, spec, current.get(spec.name), archives, infos, plan, ref, services)
    removed = [service for name, service in sorted(current.items()) if name not in manifest.services]
    for service in removed:
        # Only services of the same manifest link it, and the manifest no longer may: their links
        # are gone (set_links above) before this step, or they are removed with it.
        plan.add(
            "removed", f"service {service.name}", lambda s=service: lifecycle.request_delete(s, owner, along=removed)
        )
    applied = Applied(application, plan, dry_run)
    if dry_run:
        return applied
    for step in plan.steps:
        operation = step()
        if isinstance(operation, Operation):
            applied.operations.append(operation)
    applied.application = ref["application"]
    if not plan.empty:
        summary = f"applied the manifest of {manifest.application}: " + plan_summary(plan)
        for service in ref["application"].services.all():
            Event.record(service, "apply", summary, actor=owner)
    return applied


def plan_summary(plan: Plan) -> str:
    return ", ".join(f"{len(lines)} {kind}" for kind, lines in plan_lines(plan).items())


def plan_lines(plan: Plan) -> dict[str, list[str]]:
    return {"created": plan.created, "changed": plan.changed, "removed": plan.removed}


def check(owner, manifest: Manifest, archives: dict, current: dict[str, Service]) -> dict:
    """Every refusal, before any change; returns each archive's ArchiveInfo by path."""
    errors = []
    for name, spec in manifest.services.items():
        service = current.get(name)
        if service is None and Service.objects.filter(owner=owner, name=name).exists():
            errors.append(
                f"services.{name}: you already have a service named {name} outside application {manifest.application}"
            )
        elif service is not None and service.runtime != spec.runtime:
            errors.append(
                f"services.{name}.runtime: {name} is a {service.runtime} service; a runtime does not "
                "change (remove the service from the manifest, apply, then add it again)"
            )
        elif service is not None and service.state == ServiceState.DELETING:
            errors.append(f"services.{name}: {name} is being deleted; apply again when it is gone")
    infos = {}
    for path, where in manifest.paths().items():
        if path not in archives:
            errors.append(f"{where}: no file uploaded for {path}")
            continue
        if ".versions." not in where:
            continue  # a dump: its data service reads it
        runtime = manifest.services[where.split(".")[1]].runtime
        try:
            infos[path] = inspect_archive(archives[path], runtime, upload_limits(), filename=path)
        except ArchiveError as exc:
            errors.append(f"{where}: {path}: {exc}")
    for name, spec in manifest.services.items():
        service = current.get(name)
        stored = {v.label: v for v in service.versions.all()} if service else {}
        for label, path in spec.versions.items():
            if label in stored and path in infos and stored[label].sha256 != infos[path].sha256:
                errors.append(
                    f"services.{name}.versions.{label}: {path} differs from the stored {label}; "
                    "a code version never changes: give it a new label"
                )
            elif label in stored and spec.release is not None and stored[label].release_command != spec.release:
                errors.append(
                    f"services.{name}.release: differs from the stored {label}'s "
                    f"({stored[label].release_command or 'none'}); a code version never changes: give it a new label"
                )
    if errors:
        raise ManifestInvalid(errors)
    quotas.check_application(
        owner,
        new_nodes=[spec.nodes for name, spec in manifest.services.items() if name not in current],
        scaled={current[name].pk: spec.nodes for name, spec in manifest.services.items() if name in current},
        removed=[service.pk for name, service in current.items() if name not in manifest.services],
    )
    return infos


def create_application(owner, manifest: Manifest, ref: dict) -> None:
    ref["application"] = Application.objects.create(owner=owner, name=manifest.application)


def plan_service(owner, spec: ServiceSpec, service, archives, infos, plan: Plan, ref: dict, services: dict) -> None:
    name = spec.name
    if service is None:
        extra = [e for e in spec.environments if e not in ("production", "development")]

        def create():
            services[name], operation = lifecycle.create(
                owner, name, spec.runtime, application=ref["application"], environments=extra, **spec.options()
            )
            return operation

        plan.add("created", f"service {name} ({spec.runtime})", create)
        if spec.dump:  # loaded once, when the database is created (after its create operation)

            def load(path=spec.dump):
                archives[path].seek(0)
                return request_load(services[name], owner, archives[path], filename=path)

            plan.add("created", f"load {name} from {spec.dump}", load)
        environments, versions, nodes = {}, {}, 1
    else:
        services[name] = service
        environments = {e.name: e for e in service.environments.select_related("version")}
        versions = {v.label: v for v in service.versions.all()}
        nodes = service.backend_nodes
        for env in spec.environments:
            if env not in environments:

                def add(env=env) -> None:
                    add_environment(services[name], env, owner)

                plan.add("created", f"environment {name}/{env}", add)
    if service is not None:
        plan_options(spec, service, plan, services, owner)
    if spec.runtime in DATA_RUNTIMES:
        plan_backups(spec, service, plan, services, owner)
    linked = sorted(service.links.values_list("target__name", flat=True)) if service else []
    if sorted(spec.links) != linked:
        change = [f"link {t}" for t in spec.links if t not in linked] + [
            f"unlink {t}" for t in linked if t not in spec.links
        ]
        plan.add(
            "changed",
            f"{name}: " + ", ".join(change),
            lambda: set_links(services[name], [services[t] for t in spec.links], owner),
        )
    if spec.nodes != nodes:
        plan.add(
            "changed",
            f"{name}: backend nodes {nodes} → {spec.nodes}",
            lambda: request_scale(services[name], "backend", spec.nodes, owner),
        )
    uploaded = {}
    for label, path in spec.versions.items():
        if label not in versions:

            def upload(label=label, path=path):
                archives[path].seek(0)  # one file may be named by two services
                uploaded[label] = store_version(
                    services[name], archives[path], label, owner, filename=path, release_command=spec.release
                )

            plan.add("created", f"version {name}/{label} from {path} ({infos[path].size} bytes)", upload)
    for env, wanted in spec.environments.items():
        environment = environments.get(env)
        settings, copy = spec.settings_of(env), wanted.database_copy
        serving = environment.version.label if environment and environment.version else None
        changes = [f"deploy {wanted.version}" + (f" (serves {serving})" if serving else "")]
        if environment is not None:
            if serving == wanted.version:
                changes = []
            if changed := changed_settings(environment.settings, settings):
                changes.append("settings " + ", ".join(changed))
            if copy != environment.database_copy:
                changes.append("own database copy" if copy else "no database copy")
            if not changes or deploying(environment, versions.get(wanted.version), settings, copy):
                continue
        elif settings or copy:
            changes.append("with settings " + ", ".join(settings) if settings else "with its own database copy")

        def deploy(env=env, label=wanted.version, settings=settings, copy=copy):
            environment = Environment.objects.get(service=services[name], name=env)
            version = uploaded.get(label) or services[name].versions.get(label=label)
            return request_deploy(environment, version, owner, settings=settings, database_copy=copy)

        plan.add("changed", f"{name}/{env}: " + "; ".join(changes), deploy)


def plan_options(spec: ServiceSpec, service: Service, plan: Plan, services: dict, owner) -> None:
    """A change of the service's options (health check, heap): one line, one lifecycle.update."""
    changed = {option: value for option, value in spec.options().items() if getattr(service, option) != value}
    if not changed:
        return
    said = []
    if "java_heap_mb" in changed:
        said.append(f"java heap {service.java_heap_mb} MB → {spec.java_heap_mb} MB")
    if "synchronous" in changed:
        said.append(f"synchronous commits {'on' if spec.synchronous else 'off'}")
    if changed.keys() & set(lifecycle.HEALTH_OPTIONS):
        wanted = Service(health_check_path=spec.health_path, health_check_status=spec.health_status)
        said.append(f"health check {service.health_check} → {wanted.health_check}")
    plan.add(
        "changed",
        f"{spec.name}: " + ", ".join(said),
        lambda: lifecycle.update(services[spec.name], owner, **changed),
    )


def plan_backups(spec: ServiceSpec, service: Service | None, plan: Plan, services: dict, owner) -> None:
    """A data service's backup policy, when the manifest's differs from the service's (a new
    service's is the default)."""
    current = backups.policy(service or Service())
    if spec.backups == current:
        return
    if spec.backups["enabled"]:
        said = f"backups every {spec.backups['every_hours']} h, kept {spec.backups['keep_days']} days"
    else:
        said = "backups off"
    plan.add(
        "created" if service is None else "changed",
        f"{spec.name}: {said}",
        lambda: backups.configure(services[spec.name], owner, **spec.backups),
    )


def deploying(environment: Environment, version, settings: dict, database_copy: bool) -> bool:
    """A deploy of `version` with these settings into `environment` is already pending or running
    (an apply again while the first one's deploys run does not ask twice)."""
    if version is None:
        return False
    pending = Operation.objects.filter(
        service_id=environment.service_id,
        kind=OperationKind.DEPLOY,
        state__in=[OperationState.PENDING, OperationState.RUNNING],
        params__environment=environment.name,
        params__version=version.pk,
    )
    return any(
        op.params.get("settings", environment.settings) == settings
        and op.params.get("database_copy", environment.database_copy) == database_copy
        for op in pending
    )


def delete_application(application: Application, user) -> list[Operation]:
    """Delete the application and its services (each with its own delete operation)."""
    with transaction.atomic():
        services = list(application.services.all())
        operations = [lifecycle.request_delete(s, user, along=services) for s in services]
        application.delete()
    return operations
