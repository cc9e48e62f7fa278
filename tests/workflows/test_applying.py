"""Applying a manifest: plan, apply, apply again (nothing), apply a change (only the difference)."""

import io

import pytest

from services.choices import OperationKind, OperationState
from services.errors import QuotaExceeded
from services.models import Application, Operation, Quota, Service
from tests.apps import label_app, zip_archive
from tests.factories import ServiceFactory
from versions.instances import router_url
from versions.models import CodeVersion, Environment, Instance
from workflows.applying import apply, delete_application
from workflows.deploy import request_deploy
from workflows.links import relink
from workflows.manifest import ManifestInvalid, parse

MANIFEST = """\
application: shop
services:
  web:
    runtime: python
    nodes: {nodes}
    links: [api]
    versions:
      v1: ./web-v1.zip
      v2: ./web-v2.zip
    environments:
      production: v1
      development: v2
  api:
    runtime: python
    versions: {{a1: api.zip}}
    environments: {{production: a1}}
"""

FILES = {"./web-v1.zip": label_app("web1"), "./web-v2.zip": label_app("web2"), "api.zip": label_app("api")}


def archives(files=None) -> dict:
    return {path: io.BytesIO(content) for path, content in (files or FILES).items()}


def run(queue, owner, text, files=None, dry_run=False):
    """Apply `text` and run the operations it started, as the workers would."""
    with queue.capture_on_commit(execute=True):
        applied = apply(owner, parse(text), archives(files), dry_run=dry_run)
    queue.run()
    return applied


def lines(applied) -> dict:
    return {"created": applied.plan.created, "changed": applied.plan.changed, "removed": applied.plan.removed}


def served(owner) -> dict:
    return {
        f"{e.service.name}/{e.name}": e.version.label if e.version else None
        for e in Environment.objects.filter(service__owner=owner).select_related("service", "version")
    }


def test_a_dry_run_plans_everything_and_changes_nothing(alice, queue):
    applied = run(queue, alice, MANIFEST.format(nodes=2), dry_run=True)

    assert lines(applied) == {
        # api first: web links it, so its address is ready before web's instances start.
        "created": [
            "application shop",
            "service api (python)",
            f"version api/a1 from api.zip ({len(FILES['api.zip'])} bytes)",
            "service web (python)",
            f"version web/v1 from ./web-v1.zip ({len(FILES['./web-v1.zip'])} bytes)",
            f"version web/v2 from ./web-v2.zip ({len(FILES['./web-v2.zip'])} bytes)",
        ],
        "changed": [
            "api/production: deploy a1",
            "web: link api",
            "web: backend nodes 1 → 2",
            "web/production: deploy v1",
            "web/development: deploy v2",
        ],
        "removed": [],
    }
    assert not Application.objects.exists() and not Service.objects.exists() and not Operation.objects.exists()


def test_it_applies_then_applying_again_changes_nothing(alice, queue, fleet):
    applied = run(queue, alice, MANIFEST.format(nodes=2))

    application = Application.objects.get(owner=alice, name="shop")
    assert applied.application == application
    assert set(application.services.values_list("name", flat=True)) == {"web", "api"}
    assert {o.state for o in Operation.objects.all()} == {OperationState.SUCCEEDED}, [
        o.error for o in Operation.objects.all()
    ]
    assert served(alice) == {
        "web/production": "v1",
        "web/development": "v2",
        "api/production": "a1",
        "api/development": None,
    }
    assert Service.objects.get(name="web").backend_node_list().count() == 2
    calls, operations = len(fleet.calls), Operation.objects.count()

    again = run(queue, alice, MANIFEST.format(nodes=2))

    assert lines(again) == {"created": [], "changed": [], "removed": []}
    assert again.operations == []
    assert (len(fleet.calls), Operation.objects.count()) == (calls, operations)


def test_a_change_applies_only_the_difference(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    changed = (
        MANIFEST.format(nodes=1)
        .replace("production: v1", "production: v2")
        .replace("  api:\n    runtime: python\n    versions: {a1: api.zip}\n    environments: {production: a1}\n", "")
    )
    changed = changed.replace("links: [api]", "links: []").replace("development: v2", "development: v2\n      qa: v1")
    before = Operation.objects.order_by("-id").first().pk

    applied = run(queue, alice, changed)

    assert lines(applied) == {
        "created": ["environment web/qa"],
        "changed": ["web: unlink api", "web/production: deploy v2 (serves v1)", "web/qa: deploy v1"],
        "removed": ["service api"],
    }
    kinds = sorted(Operation.objects.filter(pk__gt=before).values_list("kind", flat=True))
    expected = [OperationKind.DEPLOY, OperationKind.DEPLOY, OperationKind.DELETE, OperationKind.ROUTE]
    assert kinds == sorted([*expected, OperationKind.RECONCILE])  # the reconcile takes API_URL away
    web = Service.objects.get(name="web")
    assert not any("API_URL" in i.spec["env"] for i in Instance.objects.filter(node__service=web))
    assert served(alice) == {"web/production": "v2", "web/development": "v2", "web/qa": "v1"}
    assert not Service.objects.filter(name="api").exists()
    assert CodeVersion.objects.filter(service__name="web").count() == 2  # nothing uploaded again


def test_it_does_not_deploy_twice_while_the_first_deploy_is_pending(alice, queue):
    with queue.capture_on_commit(execute=True):
        apply(alice, parse(MANIFEST.format(nodes=1)), archives())
    queue.clear()  # the workers have not started anything yet

    again = apply(alice, parse(MANIFEST.format(nodes=1)), archives())

    assert lines(again) == {"created": [], "changed": [], "removed": []}


@pytest.mark.parametrize(
    "files, setup, error",
    [
        ({"./web-v1.zip": FILES["./web-v1.zip"]}, None, "services.web.versions.v2: no file uploaded for ./web-v2.zip"),
        (
            {**FILES, "api.zip": zip_archive({"README": "no wsgi"})},
            None,
            "services.api.versions.a1: api.zip: ",
        ),
        (
            FILES,
            lambda owner: ServiceFactory(owner=owner, name="api"),
            "services.api: you already have a service named api outside application shop",
        ),
    ],
)
def test_a_refused_apply_changes_nothing(alice, queue, files, setup, error):
    if setup:
        setup(alice)
    services = Service.objects.count()

    with pytest.raises(ManifestInvalid) as refused:
        run(queue, alice, MANIFEST.format(nodes=1), files)

    assert any(line.startswith(error) for line in refused.value.errors), refused.value.errors
    assert not Application.objects.exists()
    assert Service.objects.count() == services and not CodeVersion.objects.exists()
    assert not Operation.objects.exists()


def test_a_changed_archive_under_a_stored_label_is_refused(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))

    with pytest.raises(ManifestInvalid, match="services.web.versions.v1: ./web-v1.zip differs from the stored v1"):
        run(queue, alice, MANIFEST.format(nodes=1), {**FILES, "./web-v1.zip": label_app("other")})


def test_a_changed_runtime_is_refused(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    text = MANIFEST.format(nodes=1).replace("  api:\n    runtime: python", "  api:\n    runtime: static")

    with pytest.raises(ManifestInvalid, match="services.api.runtime: api is a python service"):
        run(queue, alice, text)


@pytest.mark.parametrize(
    "quota, nodes, error",
    [
        ({"services": 1}, 1, "quota exceeded: services (1) — you have 0 services and this manifest would make 2"),
        ({"nodes": 3}, 3, "quota exceeded: nodes (3) — your services have 0 nodes and this manifest would make 4"),
    ],
)
def test_a_manifest_past_a_quota_is_refused_before_anything_changes(alice, queue, quota, nodes, error):
    Quota.objects.create(user=alice, **quota)

    with pytest.raises(QuotaExceeded) as refused:
        run(queue, alice, MANIFEST.format(nodes=nodes))

    assert str(refused.value).startswith(error)
    assert not Application.objects.exists() and not Service.objects.exists() and not CodeVersion.objects.exists()


def test_a_scale_up_past_the_node_quota_is_refused(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    Quota.objects.create(user=alice, nodes=3)

    with pytest.raises(QuotaExceeded, match="this manifest would make 4"):
        run(queue, alice, MANIFEST.format(nodes=3))

    assert Service.objects.get(name="web").backend_nodes == 1


def test_deleting_an_application_deletes_its_services(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    other = ServiceFactory(owner=alice, name="other")

    with queue.capture_on_commit(execute=True):
        operations = delete_application(Application.objects.get(name="shop"), alice)
    queue.run()

    assert sorted(o.kind for o in operations) == [OperationKind.DELETE] * 2
    assert not Application.objects.exists()
    assert list(Service.objects.values_list("name", flat=True)) == [other.name]


def test_linked_instances_get_the_target_url(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=2))

    api, web = Service.objects.get(name="api"), Service.objects.get(name="web")
    instances = Instance.objects.filter(node__service=web)
    assert instances.count() == 4  # v1 and v2 on two nodes
    assert {i.spec["env"]["API_URL"] for i in instances} == {router_url(api)}
    assert not any("WEB_URL" in i.spec["env"] for i in Instance.objects.filter(node__service=api))


def test_linked_instances_get_the_new_url_when_the_target_moves(alice, queue, fleet):
    run(queue, alice, MANIFEST.format(nodes=1))
    api, web = Service.objects.get(name="api"), Service.objects.get(name="web")
    api.proxy_nodes().update(address="10.0.0.99")  # as a router replaced elsewhere leaves it

    with queue.capture_on_commit(execute=True):
        operations = relink(api)
    queue.run()

    assert [o.kind for o in operations] == [OperationKind.RECONCILE]
    assert {i.spec["env"]["API_URL"] for i in Instance.objects.filter(node__service=web)} == {router_url(api)}
    assert "10.0.0.99" in router_url(api)
    # the agent was sent the changed spec, and started the instances again with it
    started = [i for i in fleet.instances.values() if i["node"].startswith("web-")]
    assert started and {i["env"]["API_URL"] for i in started} == {router_url(api)}
    assert relink(api) == []  # nothing stale any more


def test_a_deploy_fails_when_a_linked_service_has_no_address(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    api, web = Service.objects.get(name="api"), Service.objects.get(name="web")
    api.proxy_nodes().update(state="failed")
    Service.objects.filter(pk=api.pk).update(state="failed")
    environment = Environment.objects.get(service=web, name="production")

    operation = queue.start(lambda: request_deploy(environment, web.versions.get(label="v2"), alice))

    assert operation.state == OperationState.FAILED
    assert operation.error == "the linked service api has no address yet"
    assert environment.version.label == "v1"


def test_the_release_command_comes_from_the_manifest_or_else_the_procfile(alice, queue):
    procfile_app = zip_archive({"wsgi.py": "def application(e, s): pass\n", "Procfile": "release: python seed.py\n"})
    text = (
        "application: shop\nservices:\n"
        "  web: {runtime: python, release: python migrate.py --noinput, versions: {v1: web.zip}}\n"
        "  api: {runtime: python, versions: {a1: api.zip}}\n"
    )

    run(queue, alice, text, {"web.zip": procfile_app, "api.zip": procfile_app})

    assert CodeVersion.objects.get(label="v1").release_command == "python migrate.py --noinput"
    assert CodeVersion.objects.get(label="a1").release_command == "python seed.py"
    changed = text.replace("--noinput", "")
    with pytest.raises(ManifestInvalid, match="services.web.release: differs from the stored v1's"):
        run(queue, alice, changed, {"web.zip": procfile_app, "api.zip": procfile_app})


def test_a_new_data_service_loads_its_dump_once(alice, queue):
    manifest = "application: cache\nservices:\n  kv:\n    runtime: redis\n    dump: ./keys.txt\n"
    files = {"./keys.txt": b"greeting hello\ncount 42\n"}
    with queue.capture_on_commit(execute=True):
        applied = apply(alice, parse(manifest), archives(files))
    assert "load kv from ./keys.txt" in applied.plan.created
    load = Operation.objects.get(service__name="kv", kind=OperationKind.LOAD)
    assert load.params["format"] and load.params["size"] == len(files["./keys.txt"])
    # Applied again, the database exists: its dump is not loaded a second time.
    with queue.capture_on_commit(execute=True):
        again = apply(alice, parse(manifest), archives(files))
    assert not any("load" in line for line in again.plan.created)
    assert Operation.objects.filter(service__name="kv", kind=OperationKind.LOAD).count() == 1


SETTINGS_MANIFEST = """\
application: shop
services:
  web:
    runtime: python
    versions: {{v1: ./web-v1.zip, v2: ./web-v2.zip}}
    settings:
      GREETING: {greeting}
      PAYMENT_API: {{value: https://pay.example, sticky: true}}
    environments:
      production: v1
      development:
        version: v2
        settings: {{PAYMENT_API: {{value: https://sandbox.example, sticky: true}}}}
"""


def settings_of(owner, name: str) -> dict:
    return Environment.objects.get(service__owner=owner, name=name).settings


def test_settings_apply_per_environment_and_applying_again_changes_nothing(alice, queue, fleet):
    applied = run(queue, alice, SETTINGS_MANIFEST.format(greeting="hello"))

    assert "web/development: deploy v2; with settings GREETING, PAYMENT_API" in applied.plan.changed
    assert settings_of(alice, "production") == {
        "GREETING": {"value": "hello", "sticky": False},
        "PAYMENT_API": {"value": "https://pay.example", "sticky": True},
    }
    assert settings_of(alice, "development")["PAYMENT_API"]["value"] == "https://sandbox.example"
    development = Environment.objects.get(service__owner=alice, name="development")
    instance = Instance.objects.get(version=development.version, settings_key=development.settings_key)
    assert instance.spec["env"]["PAYMENT_API"] == "https://sandbox.example"
    assert instance.spec["env"]["GREETING"] == "hello"
    calls = len(fleet.calls)

    assert lines(run(queue, alice, SETTINGS_MANIFEST.format(greeting="hello"))) == {
        "created": [],
        "changed": [],
        "removed": [],
    }
    assert len(fleet.calls) == calls

    changed = run(queue, alice, SETTINGS_MANIFEST.format(greeting="hi"))

    # The names only: a setting's value may be a secret, and plans are printed.
    assert changed.plan.changed == ["web/production: settings GREETING", "web/development: settings GREETING"]
    assert settings_of(alice, "production")["GREETING"]["value"] == "hi"
    assert {o.state for o in Operation.objects.all()} == {OperationState.SUCCEEDED}


OPTIONS = """\
application: shop
services:
  web:
    runtime: python
    health: {health}
  app:
    runtime: java
    java_heap_mb: {heap}
"""


def test_it_applies_the_health_check_and_the_heap_then_applying_again_changes_nothing(alice, queue, fleet):
    run(queue, alice, OPTIONS.format(health="{path: /healthz}", heap=512))

    web, app = Service.objects.get(name="web"), Service.objects.get(name="app")
    assert (web.health_check_path, web.health_check_status, app.java_heap_mb) == ("/healthz", None, 512)
    router = web.proxy_nodes().get().name
    assert fleet.routing[router]["health_path"] == "/healthz"

    again = run(queue, alice, OPTIONS.format(health="{path: /healthz}", heap=512))
    assert lines(again) == {"created": [], "changed": [], "removed": []}

    text = OPTIONS.format(health="{path: /healthz, status: 200}", heap=768)
    plan = run(queue, alice, text, dry_run=True)
    assert lines(plan)["changed"] == [
        "web: health check GET /healthz answering any status below 500 → GET /healthz answering 200",
        "app: java heap 512 MB → 768 MB",
    ]
    web.refresh_from_db()
    assert web.health_check_status is None, "a dry run changes nothing"

    run(queue, alice, text)
    web.refresh_from_db(), app.refresh_from_db()
    assert (web.health_check_status, app.java_heap_mb) == (200, 768)
    assert fleet.routing[router]["health_status"] == 200
    assert lines(run(queue, alice, text)) == {"created": [], "changed": [], "removed": []}

    # What the manifest leaves out is the default again, as a missing `nodes` is 1.
    back = run(queue, alice, "application: shop\nservices:\n  web: {runtime: python}\n  app: {runtime: java}\n")
    assert lines(back)["changed"] == [
        "web: health check GET /healthz answering 200 → GET / answering any status below 500",
        "app: java heap 768 MB → 256 MB",
    ]
    web.refresh_from_db()
    assert (web.health_check_path, web.health_check_status) == ("/", None)


def test_a_data_services_backup_policy_is_applied_and_then_left_alone(alice, queue):
    text = "application: wiki\nservices:\n  db: {runtime: postgresql, backups: {every_hours: 6, keep_days: 3}}\n"
    applied = run(queue, alice, text)
    assert "db: backups every 6 h, kept 3 days" in applied.plan.created
    db = Service.objects.get(name="db")
    assert (db.backup_enabled, db.backup_every_hours, db.backup_keep_days) == (True, 6, 3)
    assert run(queue, alice, text).plan.changed == []
    applied = run(queue, alice, "application: wiki\nservices:\n  db: {runtime: postgresql, backups: false}\n")
    assert applied.plan.changed == ["db: backups off"]
    db.refresh_from_db()
    assert db.backup_enabled is False
