"""The API's serializers: explicit fields, one per resource; the rules stay on the models and workflows."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from routing.metrics import FIGURES
from routing.metrics import interval as metrics_interval
from routing.models import MetricPoint, Resolution
from services.choices import Role, Runtime
from services.errors import no_such
from services.models import (
    GONE,
    ApiToken,
    Application,
    Backup,
    Event,
    Node,
    Operation,
    Service,
    active_operations,
    production_urls,
)
from versions.models import Build, CodeVersion, Environment, clean_settings, preview_url, setting_problems
from workflows import lifecycle
from workflows.models import Autoscaling


class ApiTokenSerializer(serializers.ModelSerializer):
    """One of the user's tokens, without the secret: `prefix` is its first characters."""

    prefix = serializers.CharField(read_only=True, help_text="the token's first characters, to tell tokens apart")
    current = serializers.SerializerMethodField(help_text="the token this request was sent with")

    class Meta:
        model = ApiToken
        fields = ["id", "prefix", "created", "expiry", "last_used", "current"]
        read_only_fields = fields
        extra_kwargs = {"last_used": {"help_text": "to the minute; null: never used"}}

    def get_current(self, token) -> bool:
        return getattr(self.context.get("request"), "auth", None) == token


class NodeSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    # A replicated data service's member: primary, replica (or old-primary, about to be one), as
    # last seen by the workers; lag_s: a replica's seconds behind (null when unknown).
    replication_role = serializers.SerializerMethodField()
    lag_s = serializers.SerializerMethodField()

    class Meta:
        model = Node
        fields = ["id", "name", "role", "roles", "state", "address", "cloud", "created", "replication_role", "lag_s"]

    def get_role(self, node) -> str:
        return "+".join(node.roles)

    def get_replication_role(self, node) -> str | None:
        return node.replication.get("role")

    def get_lag_s(self, node) -> float | None:
        return node.replication.get("lag_s")


class EnvironmentSummarySerializer(serializers.ModelSerializer):
    version = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    version_label = serializers.CharField(source="version.label", default=None, read_only=True, allow_null=True)

    class Meta:
        model = Environment
        fields = ["name", "version", "version_label", "preview_key", "preview_url"]


class ServiceSerializer(serializers.ModelSerializer):
    # None until the service's router runs.
    url = serializers.CharField(read_only=True, allow_null=True)
    environments = EnvironmentSummarySerializer(many=True, read_only=True)
    nodes = serializers.SerializerMethodField()
    runtime = serializers.ChoiceField(choices=Runtime.choices)

    class Meta:
        model = Service
        fields = [
            "id",
            "name",
            "runtime",
            "java_heap_mb",
            "health_check_path",
            "health_check_status",
            "synchronous",
            "state",
            "url",
            "environments",
            "nodes",
            "backup_problem",
            "created",
        ]
        read_only_fields = ["id", "state", "url", "environments", "nodes", "backup_problem", "created"]

    @extend_schema_field(NodeSerializer(many=True))
    def get_nodes(self, service) -> list[dict]:
        return NodeSerializer(service.live_node_list(), many=True).data


class ServiceUpdateSerializer(serializers.ModelSerializer):
    """What may change on a service once it exists: its options, never its name or runtime.
    Each option is optional; at least one is given."""

    class Meta:
        model = Service
        fields = list(lifecycle.OPTIONS)

    def to_internal_value(self, data):
        fixed = sorted(set(data) - set(self.fields)) if isinstance(data, dict) else []
        if fixed:  # said first: a missing option is not what is wrong with {"name": …}
            raise serializers.ValidationError({name: ["cannot be changed"] for name in fixed})
        if isinstance(data, dict) and not data:
            raise serializers.ValidationError({"detail": f"give one or more of: {', '.join(self.fields)}"})
        return super().to_internal_value(data)


def service_list(services) -> list[dict]:
    """ServiceSerializer's representation of every service in `services`, from four flat queries.

    A thousand services take tens of milliseconds this way; through the serializers, about a
    second (a model instance and a DRF field walk per service, environment and node).
    tests/api/test_services.py checks that both give the same answer."""
    zone = timezone.get_current_timezone()

    def created(value) -> str:
        # serializers.DateTimeField's format, without its per-value lookups (half the time here).
        text = value.astimezone(zone).isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    environments, nodes = {}, {}
    for env in (
        Environment.objects.filter(service__in=services)
        .order_by("created", "id")
        .values_list("service_id", "name", "version_id", "version__label", "preview_key")
    ):
        environments.setdefault(env[0], []).append(env[1:])
    for node in (
        Node.objects.filter(service__in=services)
        .exclude(state__in=GONE)
        .order_by("created", "id")
        .values(
            "service_id", "id", "name", "is_proxy", "is_backend", "state", "address", "cloud", "created", "replication"
        )
    ):
        nodes.setdefault(node["service_id"], []).append(node)
    urls = production_urls(services)
    answer = []
    no_nodes = []
    rows = services.values_list(
        "id",
        "name",
        "runtime",
        "java_heap_mb",
        "health_check_path",
        "health_check_status",
        "synchronous",
        "state",
        "backup_problem",
        "created",
    )
    for pk, name, runtime, java_heap_mb, health_path, health_status, synchronous, state, backup_problem, made in rows:
        live = nodes.get(pk, no_nodes)
        url = urls.get(pk)
        answer.append(
            {
                "id": pk,
                "name": name,
                "runtime": runtime,
                "java_heap_mb": java_heap_mb,
                "health_check_path": health_path,
                "health_check_status": health_status,
                "synchronous": synchronous,
                "state": state,
                "url": url,
                "environments": [
                    {
                        "name": env_name,
                        "version": version,
                        "version_label": label,
                        "preview_key": key,
                        "preview_url": preview_url(url, env_name, key),
                    }
                    for env_name, version, label, key in environments.get(pk, ())
                ],
                "nodes": [node_representation(node, created) for node in live],
                "backup_problem": backup_problem,
                "created": created(made),
            }
        )
    return answer


def node_representation(node: dict, created) -> dict:
    roles = Node(is_proxy=node["is_proxy"], is_backend=node["is_backend"]).roles
    return {
        "id": node["id"],
        "name": node["name"],
        "role": "+".join(roles),
        "roles": roles,
        "state": node["state"],
        "address": node["address"],
        "cloud": node["cloud"],
        "created": created(node["created"]),
        "replication_role": node["replication"].get("role"),
        "lag_s": node["replication"].get("lag_s"),
    }


class OperationSerializer(serializers.ModelSerializer):
    service = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    params = serializers.SerializerMethodField()

    def get_params(self, operation) -> dict:
        """What the operation was asked; a deploy's settings by name only (values may be secrets,
        and an operation stays in the history: the environment shows its owner the values)."""
        params = dict(operation.params or {})
        if isinstance(params.get("settings"), dict):
            params["settings"] = sorted(params["settings"])
        return params

    class Meta:
        model = Operation
        fields = [
            "id",
            "kind",
            "state",
            "progress",
            "counters",
            "error",
            "service",
            "service_name",
            "params",
            "created",
            "started",
            "finished",
        ]


class EventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.username", default=None, read_only=True, allow_null=True)
    operation = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = Event
        fields = ["id", "action", "message", "outcome", "actor", "operation", "created"]


class ScaleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)
    nodes = serializers.IntegerField(min_value=1, max_value=20)

    def validate(self, data):
        if data["role"] == Role.PROXY and data["nodes"] != 1:
            raise serializers.ValidationError({"nodes": "a service runs exactly one proxy node in this release"})
        return data


class BuildSerializer(serializers.ModelSerializer):
    class Meta:
        model = Build
        fields = ["kind", "sha256", "size", "seconds", "summary", "created"]


class CodeVersionSerializer(serializers.ModelSerializer):
    build = BuildSerializer(read_only=True, allow_null=True, help_text="its build, once its first deploy made it")
    needs_build = serializers.BooleanField(
        read_only=True,
        allow_null=True,
        help_text=(
            "null until its first deploy looked; true: it has dependencies to build (or reuse); false: nothing to build"
        ),
    )

    class Meta:
        model = CodeVersion
        fields = ["id", "label", "sha256", "size", "kind", "entry_point", "created", "build", "needs_build"]


class UploadSerializer(serializers.Serializer):
    archive = serializers.FileField(allow_empty_file=True)
    label = serializers.CharField(required=False, allow_blank=True, max_length=40)


class DumpSerializer(serializers.Serializer):
    dump = serializers.FileField(allow_empty_file=True)


class CredentialsSerializer(serializers.Serializer):
    url = serializers.CharField(help_text="the connection URL with the password, as linked instances get it")
    host = serializers.CharField()
    port = serializers.IntegerField()
    user = serializers.CharField(allow_null=True)
    password = serializers.CharField()
    database = serializers.CharField()


def validated_settings(raw) -> dict:
    """versions.models.clean_settings for a serializer: one message per wrong setting, naming it."""
    try:
        return clean_settings(raw)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(setting_problems(exc)) from None


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {
                        # null: shown to someone else than the service's owner
                        "value": {"type": "string", "nullable": True},
                        "sticky": {"type": "boolean"},
                    },
                    "required": ["value"],
                },
            ]
        },
        "example": {"GREETING": "hello", "PAYMENT_API": {"value": "https://sandbox.example", "sticky": True}},
    }
)
class SettingsField(serializers.JSONField):
    """NAME: value, or NAME: {value, sticky} (a sticky one stays with the environment on a swap)."""

    def to_internal_value(self, data):
        return validated_settings(super().to_internal_value(data))


SETTINGS_HELP = (
    "environment variables of its instances: NAME: value (travels with the code version on a swap) "
    "or NAME: {value, sticky: true} (stays with the environment); written whole"
)
DATABASE_COPY_HELP = (
    "its own copy of each database the service links, made from production's at its first deploy "
    "and dropped with it; a swap moves no data"
)


class EnvironmentSerializer(serializers.ModelSerializer):
    version = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    version_label = serializers.CharField(source="version.label", default=None, read_only=True, allow_null=True)
    preview_url = serializers.CharField(read_only=True, allow_null=True)
    state = serializers.SerializerMethodField()
    # Production has none (null); a new environment without one gets a random one.
    preview_key = serializers.CharField(required=False, allow_null=True, max_length=128)
    settings = SettingsField(required=False, help_text=SETTINGS_HELP)
    database_copy = serializers.BooleanField(required=False, help_text=DATABASE_COPY_HELP)

    class Meta:
        model = Environment
        fields = [
            "name",
            "version",
            "version_label",
            "preview_key",
            "preview_url",
            "state",
            "settings",
            "database_copy",
            "updated",
        ]
        read_only_fields = ["updated"]

    def to_representation(self, environment):
        data = super().to_representation(environment)
        request = self.context.get("request")
        if request is not None and request.user.pk != environment.service.owner_id:
            # Values may be secrets: the owner's alone (staff, who see every service, see names).
            data["settings"] = {name: {**s, "value": None} for name, s in data["settings"].items()}
        return data

    def get_state(self, environment) -> str:
        deploying = active_operations().filter(
            service=environment.service_id, kind="deploy", params__environment=environment.name
        )
        if deploying.exists():
            return "deploying"
        return "live" if environment.version_id else "empty"


class DeploySerializer(serializers.Serializer):
    version = serializers.IntegerField(required=False)
    preview_key = serializers.CharField(required=False, max_length=128)
    settings = SettingsField(required=False, help_text=SETTINGS_HELP)
    database_copy = serializers.BooleanField(required=False, help_text=DATABASE_COPY_HELP)

    def validate_version(self, version_id) -> CodeVersion:
        """The code version itself: the deploy is asked for this one (workflows.deploy checks, locked,
        that it is still there)."""
        service = self.context["service"]
        version = service.versions.filter(pk=version_id).first()
        if version is None:
            ids = service.versions.values_list("pk", flat=True)
            raise serializers.ValidationError(no_such("version with id", version_id, ids, service.name))
        return version


class DeleteServiceSerializer(serializers.Serializer):
    force = serializers.BooleanField(
        default=False, help_text="delete even though other services link it (they keep a link to nothing)"
    )

    def validate(self, attrs):
        # A query string's `force=` reads as absent to DRF (an unchecked checkbox): said, not guessed.
        if self.initial_data.get("force") == "":
            raise serializers.ValidationError({"force": "true or false"})
        return attrs


class SwapSerializer(serializers.Serializer):
    environment = serializers.CharField(default="development")
    dry_run = serializers.BooleanField(default=False, help_text="answer what the swap would change; change nothing")


# Bodies the API answers but never reads: declared for the OpenAPI description (api/openapi.py).


class ServiceCreatedSerializer(ServiceSerializer):
    """A new service, plus the operation that boots its first node, for clients to follow."""

    operation = OperationSerializer(read_only=True)

    class Meta(ServiceSerializer.Meta):
        fields = [*ServiceSerializer.Meta.fields, "operation"]


class EnvironmentMetricsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    request_rate = serializers.FloatField(help_text="requests per second over the window")
    arrival_rate = serializers.FloatField(
        help_text="requests per second that reached the routers, those waiting in a router's queue included"
    )
    served_rate = serializers.FloatField(
        allow_null=True, help_text="answers per second the instances gave (estimated from the routers' sampled log)"
    )
    error_rate = serializers.FloatField(help_text="share of 5xx answers, 0 to 1")
    live_connections = serializers.IntegerField()
    queue_timeouts = serializers.IntegerField(
        help_text="requests answered 503 because no instance was free within the router's queue timeout"
    )
    p50_ms = serializers.FloatField(allow_null=True, help_text="median response time; null without requests")
    p95_ms = serializers.FloatField(allow_null=True, help_text="95th percentile response time; null without requests")


class MetricPointSerializer(serializers.ModelSerializer):
    """One kept point: the figures of the span that ends at `time`."""

    seconds = serializers.SerializerMethodField(help_text="the span the point stands for")

    class Meta:
        model = MetricPoint
        fields = ["time", "seconds", *FIGURES]

    def get_seconds(self, point) -> int:
        return 60 if point.resolution == Resolution.MINUTE else metrics_interval()


class MetricsSerializer(serializers.Serializer):
    window_seconds = serializers.IntegerField(help_text="the span of the live figures: the window, at most 3600")
    environments = serializers.DictField(child=EnvironmentMetricsSerializer(), help_text="by environment name")
    series_seconds = serializers.IntegerField(help_text="the span of the series: the window, at most a day")
    series = serializers.DictField(
        child=MetricPointSerializer(many=True),
        help_text="by environment name, the kept points of the window, oldest first: every "
        "CONPAAS_METRICS_INTERVAL seconds for the last hour, minute averages before",
    )


class AutoscalingSerializer(serializers.ModelSerializer):
    """A service's autoscaling policy; a PUT changes the fields it names and keeps the others.
    The rules (min_nodes ≥ 1, max_nodes ≥ min_nodes and within the node quota, target > 0) are
    the model's (workflows.models.Autoscaling), said by field."""

    enabled = serializers.BooleanField(required=False)
    target_p95_ms = serializers.IntegerField(required=False, help_text="the p95 response time to keep under, in ms")
    min_nodes = serializers.IntegerField(required=False, help_text="backend nodes at least, 1 or more")
    max_nodes = serializers.IntegerField(required=False, help_text="backend nodes at most, within your node quota")
    cooldown_s = serializers.IntegerField(
        required=False, help_text="seconds after a change before scaling in (0 to 86400)"
    )
    nodes = serializers.SerializerMethodField(help_text="backend nodes running now")
    last_decision = serializers.JSONField(
        read_only=True,
        allow_null=True,
        help_text="the autoscaler's last decision: time, action (out, in, hold, limited), from_nodes, "
        "nodes, reason and the figures behind it; null before the first",
    )

    class Meta:
        model = Autoscaling
        fields = [
            "enabled",
            "target_p95_ms",
            "min_nodes",
            "max_nodes",
            "cooldown_s",
            "nodes",
            "last_decision",
            "updated",
        ]
        read_only_fields = ["updated"]

    def get_nodes(self, policy) -> int:
        return self.context["nodes"]


class BackupPolicySerializer(serializers.Serializer):
    """A data service's backup policy; a PUT changes the fields it names and keeps the others."""

    enabled = serializers.BooleanField(required=False, help_text="take backups on a schedule (on by default)")
    every_hours = serializers.IntegerField(required=False, help_text="hours between backups (1 to 744; 24)")
    keep_days = serializers.IntegerField(
        required=False, help_text="days backups are kept (1 to 3650; 7); the newest verified one is always kept"
    )


class BackupSerializer(serializers.ModelSerializer):
    recovery_window = serializers.SerializerMethodField(
        help_text="what a restore can reach: PostgreSQL from the oldest kept base backup's end to the last "
        "archived WAL; Redis the snapshot's moment"
    )
    verified = serializers.BooleanField(
        allow_null=True, help_text="restored into a scratch server and checked: null while not yet"
    )

    class Meta:
        model = Backup
        fields = ["id", "backup_id", "created", "kind", "size", "state", "verified", "verification", "error",
                  "recovery_window"]  # fmt: skip

    @extend_schema_field(
        {"type": "object", "properties": {"from": {"type": "string", "format": "date-time", "nullable": True},
                                          "to": {"type": "string", "format": "date-time", "nullable": True}}}
    )  # fmt: skip
    def get_recovery_window(self, backup) -> dict:
        window = self.context["window"](backup)
        field = serializers.DateTimeField()
        return {end: field.to_representation(value) if value else None for end, value in window.items()}


class RestoreSerializer(serializers.Serializer):
    backup = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="the id of a backup (from the list)"
    )
    time = serializers.DateTimeField(required=False, help_text="PostgreSQL: a moment, ISO 8601 with its offset")
    into = serializers.CharField(
        required=False, allow_blank=True, max_length=40, help_text="a new service's name: restore into it"
    )


class LogLineSerializer(serializers.Serializer):
    node = serializers.CharField()
    instance = serializers.CharField()
    file = serializers.CharField(help_text="the log file's name, e.g. access.log")
    line = serializers.CharField(trim_whitespace=False)


class FailureSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="the label of the version whose deploy failed")
    at = serializers.DateTimeField(help_text="when its instances' logs were kept, as they were retired")


class LogsSerializer(serializers.Serializer):
    environment = serializers.CharField()
    version = serializers.IntegerField(
        allow_null=True, help_text="the code version it runs; null: none (and with `failed`, always)"
    )
    lines = LogLineSerializer(many=True, help_text="each file's lines in order, instance by instance")
    errors = serializers.ListField(child=serializers.CharField(), help_text="nodes whose logs could not be read")
    last_failure = FailureSerializer(
        allow_null=True, help_text="the last deploy into the environment that failed, whose logs `failed=true` reads"
    )


class SignInSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="send it as `Authorization: Token <token>`; shown this once only")
    expiry = serializers.DateTimeField(help_text="when it stops working (CONPAAS_TOKEN_TTL_DAYS after now)")


class ErrorSerializer(serializers.Serializer):
    """A refusal: one sentence for the user."""

    detail = serializers.CharField()


class ValidationErrorSerializer(serializers.Serializer):
    """Bad input: each other key names a field and carries its messages; `detail` when no single
    field is to blame."""

    detail = serializers.CharField(required=False)


class ApplicationSerializer(serializers.ModelSerializer):
    services = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Application
        fields = ["id", "name", "services", "created"]
        read_only_fields = ["id", "services", "created"]
        # The unique (owner, name) rule is checked by the view, which knows the owner.
        validators = []


class ApplySerializer(serializers.Serializer):
    """The manifest, and one file part per file it names, each part named by the path the manifest
    gives (`./web-v1.zip`), so that paths stay the manifest's and the files travel once."""

    manifest = serializers.CharField(help_text="the manifest's YAML text", trim_whitespace=False)
    dry_run = serializers.BooleanField(default=False, help_text="answer the plan and change nothing")


class AppliedSerializer(serializers.Serializer):
    application = serializers.CharField()
    dry_run = serializers.BooleanField()
    created = serializers.ListField(child=serializers.CharField())
    changed = serializers.ListField(child=serializers.CharField())
    removed = serializers.ListField(child=serializers.CharField())
    operations = OperationSerializer(many=True)
