"""Schemathesis over the OpenAPI description at /api/schema/, against the real site in-process (WSGI).

Every operation, the ones that create and delete too, as a signed-in user with low quotas:
no answer may be a 5xx, and every answer must be one the description declares, in its shape.
Generated ids are mostly turned into ids that exist (the user's service, another user's, their
versions, environments and operations), so the calls reach past the 404 into the real work.

Nothing boots and nothing runs in the background: operations the API queues stay queued (no
worker takes them), nodes would come from an in-memory cloud, and the agents are the fake fleet
(tests/fakes.py), so a swap, a new environment, the metrics or the logs reach a node without a network.
The cases are derandomized: the same for the same code (hypothesis also draws constants from the
project's modules). The number of cases run is printed in the terminal summary
(tests/api/conftest.py)."""

import hashlib
from datetime import timedelta

import knox.crypto
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.db.models import Q
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.transport.serialization import Binary

from conpaas_site.wsgi import application
from routing.table import push
from services import agent, clouds, operations, tokens
from services.models import ApiToken, Application, Backup, Operation, Service
from tests.api.conftest import FUZZ_REPORT, FuzzReport
from tests.apps import label_app
from tests.factories import CodeVersionFactory, NodeFactory, ServiceFactory, UserFactory
from tests.fakes import FakeFleet, MemoryCloud
from versions.instances import Release, ensure_instances
from versions.models import CodeVersion, Environment

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

PASSWORD = "fuzz-pw"  # alice's, so that the token call has a real answer to find too
# Alice's API token, the same in every test's database (keep_signed_in): schemathesis puts it on
# the cases while it makes them, before the test's fixtures run.
TOKEN = "f0" * 32


@schema.auth()
class AliceToken:
    """Alice's token on every case; schemathesis also sends each operation once without it and once
    with a wrong one, and expects a 401."""

    def get(self, case, context):
        return TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}


@pytest.fixture
def world(db, monkeypatch, settings, request):
    """Alice's running service `shop` (v1 in production, v2 in development, v3 unused, on one node
    holding both roles), her java service `jvm`, her finished operation, and Bob's service she may
    not see."""
    settings.CONPAAS_QUOTA_SERVICES = 4  # one more than alice's three
    settings.CONPAAS_QUOTA_NODES = 4
    settings.CONPAAS_BACKUP_S3_ENDPOINT, settings.CONPAAS_BACKUP_S3_BUCKET = "http://10.9.9.9:8333", "backups"
    settings.CONPAAS_QUOTA_ENVIRONMENTS = 4
    settings.CONPAAS_QUOTA_STORAGE_MB = 1
    settings.CONPAAS_MAX_UPLOAD_MB = 1
    settings.CONPAAS_DRAIN_TIMEOUT = 0
    fleet = FakeFleet()
    cloud = MemoryCloud(fleet.calls)
    monkeypatch.setattr(agent, "client_for", fleet.client)
    monkeypatch.setattr(clouds, "get_cloud", lambda name=None: cloud)
    monkeypatch.setattr(operations, "async_task", lambda *args, **kwargs: None)  # no worker takes them

    alice = UserFactory(username="alice", password=PASSWORD)
    shop = ServiceFactory(owner=alice, name="shop")
    NodeFactory(service=shop, is_proxy=True)
    for name, label in (("production", "v1"), ("development", "v2")):
        version = CodeVersionFactory(service=shop, label=label)
        environment = Environment.objects.get(service=shop, name=name)
        ensure_instances(shop, Release.of(environment, version))
        Environment.objects.filter(pk=environment.pk).update(version=version)
    CodeVersionFactory(service=shop, label="v3")
    push(shop)
    ServiceFactory(owner=alice, name="jvm", runtime="java")  # the one kind whose heap may be set
    # The one kind with backups, with a verified one and its recovery window.
    wikidb = ServiceFactory(owner=alice, name="wikidb", runtime="postgresql", password="p" * 32)
    NodeFactory(service=wikidb, data_port=20001)
    end = timezone.now() - timedelta(hours=1)
    Backup.objects.create(service=wikidb, kind="base", backup_id="b1", state="completed", verified=True, end_time=end)
    Service.objects.filter(pk=wikidb.pk).update(backup_archived_until=timezone.now())
    Operation.objects.create(service=shop, service_name="shop", owner=alice, kind="deploy", state="succeeded")
    Application.objects.create(owner=alice, name="shop-app")  # no service: deleting it starts nothing
    bob = UserFactory(username="bob")
    Application.objects.create(owner=bob, name="bobs")
    CodeVersionFactory(service=ServiceFactory(owner=bob, name="other"), label="b1")
    tokens.issue(bob)

    # The site is called as a WSGI server calls it, and the end of each request would close the
    # database connection, and the test's transaction with it: kept open as Django's test client does.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
        request.addfinalizer(lambda signal=signal: signal.connect(close_old_connections))

    report: FuzzReport = request.config.stash.setdefault(FUZZ_REPORT, FuzzReport())
    answers: list[int] = []
    yield {"answers": answers, "report": report, "alice": alice}
    # Queued operations (a deploy, a scale, a deletion) stay queued: nothing runs them here.
    assert not cloud.nl, "no node was booted"
    assert len(fleet.calls_to("put_instance")) == 2, "no instance was started but the fixture's two"
    # A run that only ever met 404s and 400s proves little: each operation must have succeeded too.
    assert any(status < 300 for status in answers), f"no case succeeded: {sorted(set(answers))}"


def keep_signed_in(user) -> None:
    """Issue `user`'s token TOKEN, unless it is there: a case may have revoked it."""
    if not ApiToken.objects.filter(digest=knox.crypto.hash_token(TOKEN)).exists():
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(knox.crypto, "create_token_string", lambda: TOKEN)  # knox draws a random one
            tokens.issue(user)


def existing(path: str, name: str, service_id=None) -> tuple[list, list]:
    """The objects a parameter may name: alice's (or those of the service the case names first),
    and other users' (a 404 for her)."""
    if service_id not in Service.objects.values_list("pk", flat=True):
        service_id = None  # the case names no service that exists (maybe not a number the database holds)
    if name == "service_pk" or path.startswith("/api/v1/services/{id}/"):
        # `jvm` only where aim() sends a heap to set: a python app is what the other cases upload.
        objects, mine = Service.objects.all(), Q(owner__username="alice") & ~Q(name__in=["jvm", "wikidb"])
    elif path.startswith("/api/v1/operations/"):
        objects, mine = Operation.objects.all(), Q(owner__username="alice")
    elif path.startswith("/api/v1/applications/"):
        objects, mine = Application.objects.all(), Q(owner__username="alice")
    elif path.startswith("/api/v1/auth/tokens/"):
        objects, mine = ApiToken.objects.all(), Q(user__username="alice")
    elif name == "name":
        names = Environment.objects.filter(service_id=service_id).values_list("name", flat=True)
        return sorted(names) if service_id else [], []
    else:
        objects = CodeVersion.objects.all()
        mine = Q(service_id=service_id) if service_id else Q(service__owner__username="alice")
    ids = objects.order_by("pk").values_list("pk", flat=True)
    return list(ids.filter(mine)), list(ids.exclude(mine))


def pick(value, objects: tuple[list, list]):
    """Most generated values become one of alice's objects, some another user's, chosen by the value
    itself (so the run stays reproducible); one in six is left as generated."""
    if isinstance(value, str) and value.isdigit():
        index = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        index = value
    elif isinstance(value, str):
        index = len(value)
    else:
        return value
    mine, theirs = objects
    candidates = theirs if index % 6 == 5 else mine if index % 6 else []
    return candidates[index % len(candidates)] if candidates else value


def aim(case) -> None:
    """Point the generated case at real objects and, at times, real content."""
    path = case.operation.path
    parameters = case.path_parameters or {}
    if not case.meta.is_negative_at(ParameterLocation.PATH):  # a path meant to miss stays as generated
        for name in sorted(parameters, key=lambda name: name != "service_pk"):  # the service first
            parameters[name] = pick(parameters[name], existing(path, name, parameters.get("service_pk")))
    query = case.query or {}
    environment = query.get("environment")
    if path.endswith("/logs/") and isinstance(environment, str) and len(environment) % 2:
        if not case.meta.is_negative_at(ParameterLocation.QUERY):
            query["environment"] = "development"  # an environment that exists: its instances' logs
    if ("/backups/" in path or path.endswith("/restore/")) and str(parameters.get("id", "")).isdigit():
        if int(parameters["id"]) % 6 and not case.meta.is_negative_at(ParameterLocation.PATH):
            parameters["id"] = Service.objects.get(name="wikidb").pk  # the service with backups
    body = case.body
    if not isinstance(body, dict) or case.meta.is_negative_at(ParameterLocation.BODY):
        return  # a body meant to be refused stays as generated
    if path.endswith("/environments/{name}/") and "version" in body:
        body["version"] = pick(body["version"], existing("", "version", parameters.get("service_pk")))
    heap = body.get("java_heap_mb")
    if path == "/api/v1/services/{id}/" and isinstance(heap, int) and not isinstance(heap, bool) and heap % 3:
        # Only a java service has a heap to set, and within its bounds.
        parameters["id"] = Service.objects.get(name="jvm").pk
        body["java_heap_mb"] = 64 + heap % 1000
    if path == "/api/v1/services/{id}/autoscaling/" and len(body) % 2:
        # A policy that holds (max within what alice's node quota leaves), now and then.
        body.update(enabled=True, target_p95_ms=250, min_nodes=1, max_nodes=1, cooldown_s=30)
    if path == "/api/v1/auth/token/" and isinstance(body.get("username"), str) and len(body["username"]) % 2:
        body.update(username="alice", password=PASSWORD)
    if path.endswith("/restore/") and len(body) % 2:
        # One backup, and no other field (both a backup and a time are refused), now and then.
        body.clear()
        body["backup"] = Backup.objects.get(backup_id="b1").pk
    archive = getattr(body.get("archive"), "data", None)  # generated files come as Binary(bytes)
    if path.endswith("/versions/") and isinstance(archive, bytes) and len(archive) % 3:
        body["archive"] = Binary(label_app(hashlib.sha256(archive).hexdigest()))


# The answers' shapes against the API's description: the same on any database (tests/api's other
# tests check what PostgreSQL changes), so in the first pass only.
@pytest.mark.one_pass
@schema.parametrize()
@settings(
    max_examples=50,
    derandomize=True,  # the same cases on every run
    database=None,
    deadline=None,
    # `world` is built once per operation and shared by its cases, on purpose: the state they leave
    # (a service deleted, a quota reached) is what the next case meets.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_operation_answers_a_server_error_or_outside_its_description(case, world):
    keep_signed_in(world["alice"])
    aim(case)
    world["report"].cases += 1
    world["report"].operations.add(case.operation.label)
    response = case.call()
    world["answers"].append(response.status_code)
    # Every check but "schema-valid data is accepted": the description states shapes, not state,
    # so a name already taken, a wrong password or a runtime not available yet are a 400 naming
    # the field, as the contract says.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
