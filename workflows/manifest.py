"""The manifest: one YAML file describing an application (docs/design.md, Manifest contract).

`parse(text)` reads and checks it and returns a `Manifest`, or raises `ManifestInvalid` with
every problem, each naming the path of the wrong field (`services.web.nodes: must be ≥ 1`).
Nothing here touches the database: applying is workflows/applying.py.
"""

from dataclasses import dataclass, field

import yaml
from django.core.exceptions import ValidationError
from django.db import models

from conpaas_common.archives import release_command_problem
from services import replication
from services.choices import DATA_RUNTIMES, REPLICATED_RUNTIMES, Runtime
from services.errors import ConpaasError
from services.models import JAVA_HEAP_MB, Service, slug_validator, synchronous_problem
from versions.instances import link_variable
from versions.models import clean_settings, label_validator

# The largest manifest read: a description, not a payload.
MAX_MANIFEST_BYTES = 256 * 2**10

TOP_KEYS = ("application", "services")
SERVICE_KEYS = (
    "runtime",
    "nodes",
    "links",
    "versions",
    "environments",
    "settings",
    "release",
    "health",
    "java_heap_mb",
    "synchronous",
    "dump",
    "backups",
)
HEALTH_KEYS = ("path", "status")
BACKUP_KEYS = ("every_hours", "keep_days")
ENVIRONMENT_KEYS = ("version", "database", "settings")


class ManifestInvalid(ConpaasError):
    """The manifest is refused; nothing was changed. `errors` are `path: problem` lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))  # one per line: each names its own path


@dataclass(frozen=True)
class EnvironmentSpec:
    version: str
    database: str = ""  # "copy": its own copy of the linked database
    settings: dict = field(default_factory=dict)  # its own, over the service's (clean_settings' form)

    @property
    def database_copy(self) -> bool:
        return self.database == "copy"


@dataclass
class ServiceSpec:
    name: str
    runtime: str
    nodes: int = 1
    links: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # label -> archive path, as written
    environments: dict[str, EnvironmentSpec] = field(default_factory=dict)
    dump: str = ""
    release: str | None = None  # None: the Procfile's release: line, if any
    settings: dict = field(default_factory=dict)  # every environment's (clean_settings' form)
    # The service's options (workflows.lifecycle.OPTIONS); what the manifest leaves out is the
    # default, as a missing `nodes` is 1: applying converges to the file.
    health_path: str = "/"
    health_status: int | None = None
    java_heap_mb: int = JAVA_HEAP_MB
    synchronous: bool = False
    # A data service's backup policy (workflows/backups.py), as backups.policy() gives it; left
    # out: on, with the defaults.
    backups: dict = field(default_factory=lambda: {"enabled": True, "every_hours": 24, "keep_days": 7})

    def options(self) -> dict:
        """The service's options as lifecycle.create and lifecycle.update take them."""
        return {
            "java_heap_mb": self.java_heap_mb,
            "health_check_path": self.health_path,
            "health_check_status": self.health_status,
            "synchronous": self.synchronous,
        }

    def settings_of(self, environment: str) -> dict:
        """An environment's settings: the service's, then its own over them."""
        return dict(sorted({**self.settings, **self.environments[environment].settings}.items()))


@dataclass
class Manifest:
    application: str
    services: dict[str, ServiceSpec]

    def ordered(self) -> list[ServiceSpec]:
        """The services, each after those it links (a linked service's address is ready first)."""
        done: dict[str, ServiceSpec] = {}

        def visit(spec: ServiceSpec) -> None:
            if spec.name not in done:
                for target in spec.links:
                    visit(self.services[target])
                done[spec.name] = spec

        for spec in self.services.values():
            visit(spec)
        return list(done.values())

    def paths(self) -> dict[str, str]:
        """Each file the manifest names (its path, as written) -> the field that names it."""
        named = {}
        for service in self.services.values():
            for label, path in service.versions.items():
                named.setdefault(path, f"services.{service.name}.versions.{label}")
            if service.dump:
                named.setdefault(service.dump, f"services.{service.name}.dump")
        return named


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key written twice in one mapping is an error: the second would
    silently win (a second `settings:` would drop the first block)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: the checker names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is written twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, UniqueKeyLoader.construct_mapping)


def parse(text: str) -> Manifest:
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid([f"manifest: larger than {MAX_MANIFEST_BYTES // 2**10} KB"])
    try:
        document = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestInvalid([f"manifest: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}"]) from None
    checker = Checker()
    manifest = checker.manifest(document)
    if checker.errors:
        raise ManifestInvalid(checker.errors)
    return manifest


class Checker:
    """Collects every problem with its path, so one answer lists them all."""

    def __init__(self):
        self.errors: list[str] = []

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path}: {problem}")

    def mapping(self, value, path: str, keys: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            self.error(path, "must be a mapping")
            return {}
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"{key!r}: keys must be text")
            elif keys is not None and key not in keys:
                where = key if path == "manifest" else f"{path}.{key}"  # top-level keys are their own path
                self.error(where, f"unknown key (expected one of: {', '.join(keys)})")
        return {k: v for k, v in value.items() if isinstance(k, str)}

    def text(self, value, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.error(path, "must be non-empty text")
            return ""
        return value

    def name(self, value, path: str, validator=slug_validator) -> bool:
        try:
            validator(value)
        except ValidationError as exc:
            self.error(path, " ".join(exc.messages))
            return False
        return True

    def manifest(self, document) -> Manifest:
        if document is None:
            self.error("manifest", "is empty")
            return Manifest("", {})
        top = self.mapping(document, "manifest", TOP_KEYS)
        if not isinstance(document, dict):
            return Manifest("", {})
        application = ""
        if "application" not in top:
            self.error("application", "is required")
        elif self.text(top["application"], "application") and self.name(top["application"], "application"):
            application = top["application"]
        if "services" not in top:
            self.error("services", "is required")
            return Manifest(application, {})
        services = {}
        for name, body in self.mapping(top["services"], "services").items():
            if self.name(name, f"services.{name}"):
                services[name] = self.service(name, body)
        if isinstance(top["services"], dict) and not top["services"]:
            self.error("services", "must name at least one service")
        for service in services.values():
            self.links(service, services)
            self.linked_names(service, services)
        if not self.errors:
            self.cycles(services)
        return Manifest(application, services)

    def service(self, name: str, body) -> ServiceSpec:
        path = f"services.{name}"
        fields = self.mapping(body, path, SERVICE_KEYS)
        runtime = fields.get("runtime")
        if runtime is None:
            self.error(f"{path}.runtime", "is required")
        elif runtime not in Runtime.values:
            self.error(f"{path}.runtime", f"must be one of: {', '.join(Runtime.values)}")
        spec = ServiceSpec(name=name, runtime=runtime or "")
        if "nodes" in fields:
            nodes = fields["nodes"]
            if not isinstance(nodes, int) or isinstance(nodes, bool):
                self.error(f"{path}.nodes", "must be a whole number")
            elif nodes < 1:
                self.error(f"{path}.nodes", "must be ≥ 1")
            elif runtime in REPLICATED_RUNTIMES and (problem := replication.servers_problem(runtime, nodes)):
                self.error(f"{path}.nodes", problem)
            else:
                spec.nodes = nodes
        if "links" in fields:
            links = fields["links"]
            if not isinstance(links, list):
                self.error(f"{path}.links", "must be a list of service names")
            else:
                for i, target in enumerate(links):
                    if self.text(target, f"{path}.links[{i}]"):
                        if target in spec.links:
                            self.error(f"{path}.links[{i}]", f"{target} is linked twice")
                        else:
                            spec.links.append(target)
        data = runtime in DATA_RUNTIMES
        for key in ("versions", "environments", "settings") if data else ("dump",):
            if key in fields:
                kind = "data services have no code versions" if data else "only data services load a dump"
                self.error(f"{path}.{key}", f"not for a {runtime} service: {kind}")
        if data and "dump" in fields:
            spec.dump = self.text(fields["dump"], f"{path}.dump")
        if not data and "versions" in fields:
            for label, archive in self.mapping(fields["versions"], f"{path}.versions").items():
                if self.name(label, f"{path}.versions.{label}", label_validator) and self.text(
                    archive, f"{path}.versions.{label}"
                ):
                    spec.versions[label] = archive
        if "release" in fields and not data:
            if problem := release_command_problem(fields["release"]):
                self.error(f"{path}.release", problem)
            else:
                spec.release = fields["release"]
        elif "release" in fields:
            self.error(f"{path}.release", f"not for a {runtime} service: data services have no code versions")
        if not data and "settings" in fields:
            spec.settings = self.settings(fields["settings"], f"{path}.settings")
        if "health" in fields and data:
            self.error(f"{path}.health", f"not for a {runtime} service: data services have no router to check them")
        elif "health" in fields:
            health = self.mapping(fields["health"], f"{path}.health", HEALTH_KEYS)
            if "path" in health:
                spec.health_path = self.option(health["path"], f"{path}.health.path", "health_check_path")
            if "status" in health:
                spec.health_status = self.option(health["status"], f"{path}.health.status", "health_check_status")
        if "synchronous" in fields:
            if runtime != Runtime.POSTGRESQL:
                self.error(f"{path}.synchronous", synchronous_problem(runtime))
            elif not isinstance(fields["synchronous"], bool):
                self.error(f"{path}.synchronous", "must be true or false")
            else:
                spec.synchronous = fields["synchronous"]
        if "java_heap_mb" in fields and runtime != Runtime.JAVA:
            self.error(f"{path}.java_heap_mb", f"not for a {runtime} service: only java services run a JVM")
        elif "java_heap_mb" in fields:
            spec.java_heap_mb = self.option(fields["java_heap_mb"], f"{path}.java_heap_mb", "java_heap_mb")
        if "backups" in fields:
            self.backups(spec, fields["backups"], f"{path}.backups", data)
        if not data and "environments" in fields:
            for env, value in self.mapping(fields["environments"], f"{path}.environments").items():
                environment = self.environment(f"{path}.environments.{env}", value, spec.versions)
                if self.name(env, f"{path}.environments.{env}") and environment:
                    spec.environments[env] = environment
        return spec

    def backups(self, spec: ServiceSpec, value, path: str, data: bool) -> None:
        """`backups: {every_hours, keep_days}` (either may be left out: its default) or `false`."""
        if not data:
            only = "only databases (postgresql, redis, mysql) have backups"
            self.error(path, f"not for a {spec.runtime} service: {only}")
        elif value is False:
            spec.backups["enabled"] = False
        elif isinstance(value, dict):
            given = self.mapping(value, path, BACKUP_KEYS)
            for key in BACKUP_KEYS:
                if key in given:
                    spec.backups[key] = self.option(given[key], f"{path}.{key}", f"backup_{key}")
        else:
            self.error(path, "must be {every_hours: H, keep_days: D} or false")

    def environment(self, path: str, value, versions: dict[str, str]) -> EnvironmentSpec | None:
        if isinstance(value, dict):
            fields = self.mapping(value, path, ENVIRONMENT_KEYS)
            if "version" not in fields:
                self.error(f"{path}.version", "is required")
                return None
            database = fields.get("database", "")
            if database not in ("", "copy"):
                self.error(f"{path}.database", "must be copy")
                return None
            if database and path.endswith(".production"):
                self.error(f"{path}.database", "production uses the linked databases themselves")
                return None
            settings = self.settings(fields["settings"], f"{path}.settings") if "settings" in fields else {}
            version = self.version(f"{path}.version", fields["version"], versions)
            return EnvironmentSpec(version=version, database=database, settings=settings) if version else None
        version = self.version(path, value, versions)
        return EnvironmentSpec(version=version) if version else None

    def version(self, path: str, value, versions: dict[str, str]) -> str | None:
        if not isinstance(value, str) or value not in versions:
            named = ", ".join(versions) or "none"
            self.error(path, f"must name a version of this service (the manifest's: {named})")
            return None
        return value

    def option(self, value, path: str, name: str):
        """A service option checked by its model field's own rules (the API's too); its default
        when it is wrong, the error said."""
        model_field = Service._meta.get_field(name)
        if isinstance(model_field, models.IntegerField) and value is not None:
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(path, "must be a whole number")
                return model_field.get_default()
        elif isinstance(model_field, models.CharField) and not isinstance(value, str):
            self.error(path, "must be text")
            return model_field.get_default()
        try:
            return model_field.clean(value, None)
        except ValidationError as exc:
            for message in exc.messages:
                self.error(path, message)
            return model_field.get_default()

    def settings(self, value, path: str) -> dict:
        """versions.models.clean_settings, each problem at its setting's path."""
        try:
            return clean_settings(value)
        except ValidationError as exc:
            for key, messages in exc.message_dict.items():
                where = f"{path}.{key.removeprefix('settings.')}" if key != "settings" else path
                for message in messages:
                    self.error(where, message)
            return {}

    def cycles(self, services: dict[str, ServiceSpec]) -> None:
        """Links that lead back to where they start: neither service could start first."""
        for start in services.values():
            trail = [start.name]
            stack = [(start.name, iter(start.links))]
            while stack:
                name, targets = stack[-1]
                target = next(targets, None)
                if target is None:
                    stack.pop()
                    trail.pop()
                elif target == start.name:
                    i = start.links.index(trail[1] if len(trail) > 1 else target)
                    cycle = " → ".join([*trail, target])
                    self.error(f"services.{start.name}.links[{i}]", f"links go round in a circle ({cycle})")
                    return
                elif target not in trail:
                    trail.append(target)
                    stack.append((target, iter(services[target].links)))

    def linked_names(self, service: ServiceSpec, services: dict[str, ServiceSpec]) -> None:
        """A setting may not replace what a link gives (DATABASE_URL, <NAME>_URL)."""
        linked = {link_variable(services[t]): t for t in service.links if t in services}
        wheres = [(f"services.{service.name}.settings", service.settings)] + [
            (f"services.{service.name}.environments.{env}.settings", spec.settings)
            for env, spec in service.environments.items()
        ]
        for where, settings in wheres:
            for name in settings:
                if name in linked:
                    self.error(f"{where}.{name}", f"set by the link to {linked[name]}; a setting cannot replace it")

    def links(self, service: ServiceSpec, services: dict[str, ServiceSpec]) -> None:
        given: dict[str, str] = {}  # variable -> the linked service that gives it
        for i, target in enumerate(service.links):
            if target == service.name:
                self.error(f"services.{service.name}.links[{i}]", "a service cannot link itself")
            elif target not in services:
                self.error(f"services.{service.name}.links[{i}]", f"no service named {target} in this manifest")
            elif (variable := link_variable(services[target])) in given:
                # A postgresql and a mysql service both give DATABASE_URL: one would hide the other.
                self.error(
                    f"services.{service.name}.links[{i}]",
                    f"{target} and {given[variable]} would both give {variable}: link one service of each kind",
                )
            else:
                given[variable] = target
