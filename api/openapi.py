"""The OpenAPI description: its shared parts (typed path parameters, the error bodies, what stays
out), then what each view reads and answers, applied to the view as a class decorator
(`@openapi.services` on ServiceViewSet, api/views/services.py), so that the views read as views.

tests/api/test_schema.py generates the description with warnings as errors."""

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view

from api.serializers import (
    ApplicationSerializer,
    AppliedSerializer,
    ApplySerializer,
    AutoscalingSerializer,
    BackupPolicySerializer,
    BackupSerializer,
    CodeVersionSerializer,
    CredentialsSerializer,
    DeploySerializer,
    DumpSerializer,
    EnvironmentSerializer,
    ErrorSerializer,
    EventSerializer,
    LogsSerializer,
    MetricsSerializer,
    NodeSerializer,
    OperationSerializer,
    RestoreSerializer,
    ScaleSerializer,
    ServiceCreatedSerializer,
    ServiceSerializer,
    ServiceUpdateSerializer,
    SignInSerializer,
    SwapSerializer,
    TokenSerializer,
    UploadSerializer,
    ValidationErrorSerializer,
)

PATH = OpenApiParameter.PATH
QUERY = OpenApiParameter.QUERY

# Every id is an integer; an environment is named by its name.
SERVICE_ID = OpenApiParameter("id", int, PATH, description="the service's id")
APPLICATION_ID = OpenApiParameter("id", int, PATH, description="the application's id")
SERVICE_PK = OpenApiParameter("service_pk", int, PATH, description="the service's id")
VERSION_ID = OpenApiParameter("id", int, PATH, description="the code version's id")
OPERATION_ID = OpenApiParameter("id", int, PATH, description="the operation's id")
TOKEN_ID = OpenApiParameter("id", int, PATH, description="the API token's id (from the list of your tokens)")
ENVIRONMENT_NAME = OpenApiParameter("name", str, PATH, description="the environment's name, e.g. production")

SINCE = OpenApiParameter(
    "since", int, QUERY, description="an event id: only the events newer than it (to follow the history)"
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After", int, OpenApiParameter.HEADER, response=[429], description="seconds until the lockout ends"
)
FORCE = OpenApiParameter(
    "force", bool, QUERY, description="true: delete even though other services link it (they keep a dead link)"
)
LOG_ENVIRONMENT = OpenApiParameter(
    "environment", str, QUERY, description="the environment whose instances' logs to read (default production)"
)
LOG_LINES = OpenApiParameter(
    "lines", int, QUERY, description="the last lines of each log file of each instance, 1 to 1000 (default 100)"
)
LOG_FAILED = OpenApiParameter(
    "failed",
    bool,
    QUERY,
    description="true: the logs of the instances of the last deploy into the environment that failed, kept "
    "when they were retired",
)
WINDOW = OpenApiParameter(
    "window",
    int,
    QUERY,
    description="seconds (default 60): the live figures cover up to 3600 of them, the kept series up to 86400",
)

# The refusals of the REST API contract (docs/design.md), each a JSON body with a `detail` sentence (api/errors.py).
BAD_REQUEST = OpenApiResponse(ValidationErrorSerializer, description="bad input: the body names the field")
NOT_FOUND = OpenApiResponse(ErrorSerializer, description="no such object, or not the user's to see")
CONFLICT = OpenApiResponse(ErrorSerializer, description="conflicts with the current state (busy, in use, unhealthy)")
FORBIDDEN = OpenApiResponse(ErrorSerializer, description="only the service's owner may do this")
QUOTA = OpenApiResponse(ErrorSerializer, description="past one of the user's quotas: names it and its value")
TOO_LARGE = OpenApiResponse(
    ErrorSerializer, description="the body is over CONPAAS_MAX_UPLOAD_MB: answered before it is read, or cut off"
)
THROTTLED = OpenApiResponse(
    ErrorSerializer,
    description="too many failed sign-ins for this account or from this address: refused, the right password "
    "too, until the time the `Retry-After` header gives in seconds (CONPAAS_LOGIN_FAILURES, CONPAAS_LOGIN_COOLOFF)",
)
UNAVAILABLE = OpenApiResponse(ErrorSerializer, description="a router of the service did not answer")
UNSUPPORTED = OpenApiResponse(ErrorSerializer, description="the body is not in a media type this call reads")

# `POST /swap/` answers the version id each environment now serves: {production, <environment>}.
_SWAP_RESULT = {
    "type": "object",
    "description": "the version id each of the two environments now serves, by environment name",
    "properties": {"production": {"type": "integer"}},
    "required": ["production"],
    "additionalProperties": {"type": "integer"},
    "example": {"production": 2, "development": 1},
}


# `POST /swap/` with `dry_run`: what the swap would change (workflows.swap.SwapPlan.describe).
_CHANGE = {
    "type": "object",
    "properties": {"from": {"type": "integer", "nullable": True}, "to": {"type": "integer", "nullable": True}},
}
_LABEL_CHANGE = {
    "type": "object",
    "properties": {"from": {"type": "string", "nullable": True}, "to": {"type": "string", "nullable": True}},
}
_SETTING_CHANGE = {
    "type": "object",
    "description": "a setting whose value the environment's instances see change (null: not set)",
    "properties": {
        "from": {"type": "string", "nullable": True},
        "to": {"type": "string", "nullable": True},
        "sticky": {"type": "boolean"},
    },
}
_SWAP_PLAN = {
    "type": "object",
    "description": "the plan of a dry run: nothing was changed",
    "required": ["refused", "starts_instances", "environments"],
    "additionalProperties": False,
    "properties": {
        "refused": {"type": "string", "nullable": True, "description": "why the swap would be refused now"},
        "starts_instances": {
            "type": "boolean",
            "description": "a version gets other setting values, so it is started with them and "
            "health-checked before the routes flip",
        },
        "environments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "version": _CHANGE,
                    "version_label": _LABEL_CHANGE,
                    "settings": {"type": "object", "additionalProperties": _SETTING_CHANGE},
                },
            },
        },
    },
}
SWAP_ANSWER = OpenApiResponse(
    {"oneOf": [_SWAP_RESULT, _SWAP_PLAN]}, description="swapped; with `dry_run`, the plan and nothing changed"
)


class TokenScheme(KnoxTokenScheme):
    """`Authorization: Token <key>`: knox's scheme, for our subclass that notes each token's last use."""

    target_class = "api.authentication.TokenAuthentication"
    name = "tokenAuth"


class ValidationErrorExtension(OpenApiSerializerExtension):
    """`{detail}`, or messages keyed by field name: a free-form object a serializer cannot state."""

    target_class = ValidationErrorSerializer

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        messages = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
        return {**schema, "additionalProperties": messages}


def public_api_only(endpoints):
    """Preprocessing hook: only the user-facing API, never `/internal/` (nodes fetch archives there)."""
    return [endpoint for endpoint in endpoints if endpoint[0].startswith("/api/v1/")]


def declare_unauthorized(result, generator, request, public):
    """Postprocessing hook: every call that needs a signed-in user may answer 401 (no token, a
    wrong, expired or revoked one), with the API's `{detail}` body."""
    unauthorized = {
        "description": "not signed in: no token, or one that is wrong, expired or revoked",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for item in result["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("security"):
                operation["responses"].setdefault("401", unauthorized)
    return result


# ---------------------------------------------------------------- what each view reads and answers


def nested_in_service(**actions):
    """The description of a view under `services/{service_pk}/`: each action's own, and the service's
    id from the path on them all."""

    def describe(view):
        return extend_schema(parameters=[SERVICE_PK])(extend_schema_view(**actions)(view))

    return describe


services = extend_schema_view(
    retrieve=extend_schema(parameters=[SERVICE_ID], responses={200: ServiceSerializer, 404: NOT_FOUND}),
    create=extend_schema(responses={201: ServiceCreatedSerializer, 400: BAD_REQUEST, 403: QUOTA, 415: UNSUPPORTED}),
    partial_update=extend_schema(
        parameters=[SERVICE_ID],
        request=ServiceUpdateSerializer,
        responses={200: ServiceSerializer, 400: BAD_REQUEST, 404: NOT_FOUND, 415: UNSUPPORTED},
    ),
    destroy=extend_schema(
        parameters=[SERVICE_ID, FORCE],
        responses={202: OperationSerializer, 400: BAD_REQUEST, 404: NOT_FOUND, 409: CONFLICT},
    ),
    scale=extend_schema(
        parameters=[SERVICE_ID],
        request=ScaleSerializer,
        responses={
            202: OperationSerializer,
            400: BAD_REQUEST,
            403: QUOTA,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED,
        },
    ),
    swap=extend_schema(
        parameters=[SERVICE_ID],
        request=SwapSerializer,
        responses={
            200: SWAP_ANSWER,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
    ),
    nodes=extend_schema(parameters=[SERVICE_ID], responses={200: NodeSerializer(many=True), 404: NOT_FOUND}),
    events=extend_schema(
        parameters=[SERVICE_ID, SINCE], responses={200: EventSerializer(many=True), 400: BAD_REQUEST, 404: NOT_FOUND}
    ),
    credentials=extend_schema(
        parameters=[SERVICE_ID],
        responses={200: CredentialsSerializer, 403: FORBIDDEN, 404: NOT_FOUND, 409: CONFLICT, 503: UNAVAILABLE},
    ),
    load=extend_schema(
        parameters=[SERVICE_ID],
        request={"multipart/form-data": DumpSerializer},
        responses={
            202: OperationSerializer,
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: CONFLICT,
            413: TOO_LARGE,
            415: UNSUPPORTED,
        },
    ),
    metrics=extend_schema(
        parameters=[SERVICE_ID, WINDOW],
        responses={200: MetricsSerializer, 400: BAD_REQUEST, 404: NOT_FOUND, 503: UNAVAILABLE},
    ),
    autoscaling=extend_schema(
        parameters=[SERVICE_ID],
        request=AutoscalingSerializer,
        responses={200: AutoscalingSerializer, 400: BAD_REQUEST, 404: NOT_FOUND, 415: UNSUPPORTED},
    ),
    logs=extend_schema(
        parameters=[SERVICE_ID, LOG_ENVIRONMENT, LOG_LINES, LOG_FAILED],
        responses={200: LogsSerializer, 400: BAD_REQUEST, 404: NOT_FOUND},
    ),
    backups=extend_schema(
        parameters=[SERVICE_ID],
        request=None,
        responses={
            200: BackupSerializer(many=True),
            202: OperationSerializer,
            404: NOT_FOUND,
            409: CONFLICT,
        },
    ),
    backup_policy=extend_schema(
        parameters=[SERVICE_ID],
        request=BackupPolicySerializer,
        responses={200: BackupPolicySerializer, 400: BAD_REQUEST, 404: NOT_FOUND, 409: CONFLICT, 415: UNSUPPORTED},
    ),
    restore=extend_schema(
        parameters=[SERVICE_ID],
        request=RestoreSerializer,
        responses={
            202: OperationSerializer,
            400: BAD_REQUEST,
            403: QUOTA,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED,
        },
    ),
)


operations = extend_schema_view(
    retrieve=extend_schema(parameters=[OPERATION_ID], responses={200: OperationSerializer, 404: NOT_FOUND}),
)


applications = extend_schema_view(
    retrieve=extend_schema(parameters=[APPLICATION_ID], responses={200: ApplicationSerializer, 404: NOT_FOUND}),
    create=extend_schema(responses={201: ApplicationSerializer, 400: BAD_REQUEST, 415: UNSUPPORTED}),
    destroy=extend_schema(parameters=[APPLICATION_ID], responses={202: OperationSerializer(many=True), 404: NOT_FOUND}),
    apply=extend_schema(
        request={"multipart/form-data": ApplySerializer},
        responses={
            200: AppliedSerializer,
            202: AppliedSerializer,
            400: BAD_REQUEST,
            403: QUOTA,
            409: CONFLICT,
            413: TOO_LARGE,
            415: UNSUPPORTED,
        },
    ),
)


code_versions = nested_in_service(
    list=extend_schema(responses={200: CodeVersionSerializer(many=True), 404: NOT_FOUND}),
    retrieve=extend_schema(parameters=[VERSION_ID], responses={200: CodeVersionSerializer, 404: NOT_FOUND}),
    create=extend_schema(
        request=UploadSerializer,
        responses={
            201: CodeVersionSerializer,
            400: BAD_REQUEST,
            403: QUOTA,
            404: NOT_FOUND,
            413: TOO_LARGE,
            415: UNSUPPORTED,
        },
    ),
    destroy=extend_schema(parameters=[VERSION_ID], responses={204: None, 404: NOT_FOUND, 409: CONFLICT}),
)


environments = nested_in_service(
    list=extend_schema(responses={200: EnvironmentSerializer(many=True), 404: NOT_FOUND}),
    retrieve=extend_schema(parameters=[ENVIRONMENT_NAME], responses={200: EnvironmentSerializer, 404: NOT_FOUND}),
    create=extend_schema(
        request=EnvironmentSerializer,
        responses={
            201: EnvironmentSerializer,
            400: BAD_REQUEST,
            403: QUOTA,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
    ),
    partial_update=extend_schema(
        parameters=[ENVIRONMENT_NAME],
        request=DeploySerializer,
        responses={
            200: OpenApiResponse(EnvironmentSerializer, description="only the preview key changed"),
            202: OpenApiResponse(OperationSerializer, description="the deploy of `version`, to follow"),
            400: BAD_REQUEST,
            404: NOT_FOUND,
            409: CONFLICT,
            415: UNSUPPORTED,
            503: UNAVAILABLE,
        },
    ),
    destroy=extend_schema(
        parameters=[ENVIRONMENT_NAME],
        responses={204: None, 404: NOT_FOUND, 409: CONFLICT, 503: UNAVAILABLE},
    ),
)


sign_in = extend_schema_view(
    post=extend_schema(
        request=SignInSerializer,
        parameters=[RETRY_AFTER],
        responses={200: TokenSerializer, 400: BAD_REQUEST, 415: UNSUPPORTED, 429: THROTTLED},
        auth=[],
    ),
    delete=extend_schema(request=None, responses={204: None, 400: BAD_REQUEST}),
)


api_tokens = extend_schema_view(
    destroy=extend_schema(parameters=[TOKEN_ID], responses={204: None, 404: NOT_FOUND}),
)
