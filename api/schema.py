"""The OpenAPI description's shared parts: typed path parameters, the error bodies, what stays out.

The viewsets declare what each action reads and answers with these (api/views.py);
tests/api/test_schema.py generates the description with warnings as errors."""

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from api.serializers import ErrorSerializer, ValidationErrorSerializer

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
