"""The OpenAPI description (docs/design.md, REST API contract: "OpenAPI schema at /api/schema/") generates without a
single warning, and says what the REST API contract says: integer ids, the query parameters,
every call."""

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS

CONTRACT_PATHS = {
    "/api/v1/auth/token/": {"post"},
    "/api/v1/services/": {"get", "post"},
    "/api/v1/services/{id}/": {"get", "delete"},
    "/api/v1/services/{service_pk}/versions/": {"get", "post"},
    "/api/v1/services/{service_pk}/versions/{id}/": {"get", "delete"},
    "/api/v1/services/{service_pk}/environments/": {"get", "post"},
    "/api/v1/services/{service_pk}/environments/{name}/": {"get", "patch"},
    "/api/v1/services/{id}/swap/": {"post"},
    "/api/v1/services/{id}/scale/": {"post"},
    "/api/v1/services/{id}/nodes/": {"get"},
    "/api/v1/services/{id}/events/": {"get"},
    "/api/v1/services/{id}/metrics/": {"get"},
    "/api/v1/services/{id}/logs/": {"get"},
    "/api/v1/services/{id}/autoscaling/": {"get", "put"},
    "/api/v1/operations/": {"get"},
    "/api/v1/operations/{id}/": {"get"},
    "/api/v1/auth/tokens/": {"get"},
    "/api/v1/auth/tokens/{id}/": {"delete"},
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    """Generated as `manage.py spectacular --fail-on-warn --validate` does: a warning or an error
    fails it (SchemaGenerationError), and the result must be valid OpenAPI."""
    path = tmp_path_factory.mktemp("openapi") / "schema.yml"
    GENERATOR_STATS.reset()
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(path))
    return yaml.safe_load(path.read_text())


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def parameter(operation, name, location):
    found = [p for p in operation.get("parameters", []) if p["name"] == name and p["in"] == location]
    assert found, f"{operation['operationId']} has no {location} parameter {name}"
    return found[0]


def test_every_call_of_the_contract_is_described(schema):
    described = {path: {m for m in item if m in HTTP_METHODS} for path, item in schema["paths"].items()}
    for path, methods in CONTRACT_PATHS.items():
        assert path in described, path
        assert methods <= described[path], (path, described[path])


def test_the_nodes_archive_download_stays_out(schema):
    assert not [path for path in schema["paths"] if not path.startswith("/api/v1/")]


def test_every_id_in_a_path_is_an_integer(schema):
    checked = 0
    for path, method, operation in operations(schema):
        for p in operation.get("parameters", []):
            if p["in"] == "path":
                expected = "string" if p["name"] == "name" else "integer"
                assert p["schema"]["type"] == expected, (method, path, p)
                checked += 1
    assert checked >= 20, "every operation on one object names it"


def test_since_and_window_are_documented_query_parameters(schema):
    events = schema["paths"]["/api/v1/services/{id}/events/"]["get"]
    assert parameter(events, "since", "query")["schema"]["type"] == "integer"
    metrics = schema["paths"]["/api/v1/services/{id}/metrics/"]["get"]
    assert parameter(metrics, "window", "query")["schema"]["type"] == "integer"
    logs = schema["paths"]["/api/v1/services/{id}/logs/"]["get"]
    assert parameter(logs, "lines", "query")["schema"]["type"] == "integer"
    assert parameter(logs, "environment", "query")["schema"]["type"] == "string"


def test_refusals_are_described_with_a_detail_body(schema):
    components = schema["components"]["schemas"]
    assert components["Error"]["required"] == ["detail"]
    assert "detail" in components["ValidationError"]["properties"]
    version = schema["paths"]["/api/v1/services/{service_pk}/versions/{id}/"]["delete"]["responses"]
    assert set(version) == {"204", "401", "404", "409"}
    assert version["409"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    swap = schema["paths"]["/api/v1/services/{id}/swap/"]["post"]["responses"]
    assert {"200", "400", "404", "409", "503"} <= set(swap)


def test_every_operation_answers_a_described_body(schema):
    for path, method, operation in operations(schema):
        for code, response in operation["responses"].items():
            if code != "204":
                assert "content" in response, (method, path, code)


def test_operation_ids_are_unique_and_stable(schema):
    ids = [operation["operationId"] for _, _, operation in operations(schema)]
    assert len(ids) == len(set(ids))
    assert {"v1_services_list", "v1_services_versions_destroy", "v1_auth_token_create"} <= set(ids)


def test_the_docs_page_loads_swagger_ui_from_this_server_not_a_cdn(api):
    page = api.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "https://" not in html.replace("https://swagger.io", "")


def test_the_token_endpoint_declares_its_lockout_and_its_revocation(schema):
    token = schema["paths"]["/api/v1/auth/token/"]
    locked = token["post"]["responses"]["429"]
    assert locked["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert locked["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    assert set(token["delete"]["responses"]) == {"204", "400", "401"}
    listed = schema["components"]["schemas"]["ApiToken"]["properties"]
    assert set(listed) == {"id", "prefix", "created", "expiry", "last_used", "current"}
    assert listed["last_used"]["nullable"] and listed["expiry"]["readOnly"]
    assert schema["components"]["securitySchemes"]["tokenAuth"]["name"] == "Authorization"


def test_every_call_that_reads_a_body_declares_the_415_for_one_it_cannot_read(schema):
    with_body = [(method, path, op) for path, method, op in operations(schema) if "requestBody" in op]
    # the PATCH of a service (its heap), the PUT of its autoscaling, creating an application, applying a
    # manifest, loading a dump, the PUT of a backup policy and a restore
    assert len(with_body) == 14
    for method, path, operation in with_body:
        assert "415" in operation["responses"], (method, path)


def test_every_call_that_needs_a_signed_in_user_declares_the_401(schema):
    for path, method, operation in operations(schema):
        if operation.get("security"):
            refused = operation["responses"]["401"]
            assert refused["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
        else:
            assert (method, path) == ("post", "/api/v1/auth/token/")
            assert "401" not in operation["responses"]
