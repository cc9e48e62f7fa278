"""Storage services' workflows against the fake agent and an in-memory store: the first node runs
the S3 gateway, more nodes volume servers with replication, a linking service gets a bucket of
its own and keys that reach only it; quotas, counts and what is refused, storing nothing."""

import io

import pytest

from services import object_storage
from services.choices import NodeState, OperationState, ServiceState
from services.errors import Conflict, QuotaExceeded
from services.models import Bucket, Event, Link, Operation, Quota, Service
from tests.apps import label_app
from versions.instances import checked_settings
from versions.models import Instance
from workflows import healing, lifecycle
from workflows.applying import apply
from workflows.links import set_links
from workflows.manifest import ManifestInvalid, parse
from workflows.scaling import request_scale

MANIFEST = """\
application: photos
services:
  files:
    runtime: storage
    nodes: {nodes}
  web:
    runtime: python
    links: [files]
    versions: {{v1: ./web.zip}}
    environments: {{production: v1}}
"""


@pytest.fixture(autouse=True)
def _store(store):
    """Every test here has the in-memory store."""


def run(queue, owner, text):
    with queue.capture_on_commit(execute=True):
        applied = apply(owner, parse(text), {"./web.zip": io.BytesIO(label_app("web1"))})
    queue.run()
    return applied


def create(alice, queue, name="files"):
    made = {}

    def request():
        made["service"], operation = lifecycle.create(alice, name, "storage")
        return operation

    operation = queue.start(request)
    made["service"].refresh_from_db()
    return made["service"], operation


def secrets_in_the_open(*secrets) -> list[str]:
    said = str(list(Event.objects.values_list("message", flat=True)))
    said += str(list(Operation.objects.values_list("params", "progress", "error")))
    return [secret for secret in secrets if secret in said]


def test_it_runs_the_store_on_its_first_node_with_the_admin_identity(alice, fleet, queue):
    service, operation = create(alice, queue)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    node = service.live_nodes().get()
    assert node.roles == ["backend"] and node.data_port
    assert node.data_details["master"].startswith(node.address)
    assert service.url == f"http://{node.address}:{node.data_port}"
    put = [arg for name, call, arg in fleet.calls if call == "put_instance"]
    assert put == ["server"]
    assert not secrets_in_the_open(service.password)


def test_a_linked_service_gets_a_bucket_of_its_own_and_keys_that_reach_only_it(alice, queue, store):
    run(queue, alice, MANIFEST.format(nodes=2))

    files, web = Service.objects.get(name="files"), Service.objects.get(name="web")
    bucket = Bucket.objects.get(storage=files)
    assert (bucket.name, bucket.holder, bucket.granted) == ("web", web, True)
    env = Instance.objects.get(node__service=web).spec["env"]
    assert env["S3_ENDPOINT_URL"] == files.url
    assert env["S3_BUCKET"] == "web" and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (bucket.access_key, bucket.secret_key)
    assert store.identities == {bucket.access_key: "web"} and "web" in store.buckets
    assert env["AWS_ACCESS_KEY_ID"] != object_storage.admin_access_key(files)
    # 2 nodes: the second runs a volume server, and the store keeps every object on 2 of them.
    assert files.live_nodes().count() == 2
    assert any("-replication=001" in script for script in store.scripts)
    assert Event.objects.filter(service=files, action="storage.replication", outcome="succeeded").exists()
    assert not secrets_in_the_open(bucket.secret_key, files.password)


def test_a_setting_may_not_replace_what_the_store_gives(alice, queue):
    run(queue, alice, MANIFEST.format(nodes=1))
    web = Service.objects.get(name="web")
    with pytest.raises(Exception, match="AWS_SECRET_ACCESS_KEY: set by the link to files"):
        checked_settings(web, {"AWS_SECRET_ACCESS_KEY": "mine"})


def test_a_store_scales_out_with_volume_servers_and_does_not_shrink(alice, queue, fleet, store):
    files, _ = create(alice, queue)

    operation = queue.start(lambda: request_scale(files, "backend", 3, alice))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    assert files.live_nodes().count() == 3
    volumes = [arg for name, call, arg in fleet.calls if call == "put_instance" and arg == "volume"]
    assert len(volumes) == 2
    assert any("-replication=001" in script for script in store.scripts)
    with pytest.raises(Conflict, match="does not shrink"):
        request_scale(files, "backend", 2, alice)
    with pytest.raises(Conflict, match="no router"):
        request_scale(files, "proxy", 1, alice)


@pytest.mark.parametrize("name", ["ab", "Photos", "with_underscore", "-dash", "a" * 64, "dots.in.it"])
def test_a_bucket_name_s3_refuses_is_refused_storing_nothing(alice, queue, name):
    files, _ = create(alice, queue)
    with pytest.raises(Conflict, match="a bucket name is 3 to 63"):
        object_storage.grant_bucket(files, name)
    assert not Bucket.objects.exists()


def test_a_short_service_name_gets_a_longer_bucket(alice, queue):
    files, _ = create(alice, queue)
    web = Service.objects.create(owner=alice, name="ab", runtime="python", state=ServiceState.RUNNING)
    assert object_storage.grant_bucket(files, object_storage.bucket_for(web), holder=web).bucket == "ab-data"


def test_no_bucket_is_made_in_a_store_that_is_not_running_or_is_no_store(alice, queue):
    files, _ = create(alice, queue)
    Service.objects.filter(pk=files.pk).update(state=ServiceState.FAILED)
    files.refresh_from_db()
    with pytest.raises(Conflict, match="files is not running"):
        object_storage.grant_bucket(files, "backups")
    web = Service.objects.create(owner=alice, name="web", runtime="python", state=ServiceState.RUNNING)
    with pytest.raises(Conflict, match="not a storage service"):
        object_storage.Store.of(web)


def test_a_store_that_does_not_answer_grants_nothing_and_a_later_call_does(alice, queue, store):
    files, _ = create(alice, queue)
    store.down = True
    with pytest.raises(object_storage.StoreError, match="creating bucket backups"):
        object_storage.grant_bucket(files, "backups")
    assert not Bucket.objects.get().granted
    store.down = False
    granted = object_storage.grant_bucket(files, "backups")
    assert Bucket.objects.get().granted and store.identities == {granted.access_key: "backups"}


def test_a_link_over_the_storage_quota_is_refused_storing_nothing(alice, queue):
    files, _ = create(alice, queue)
    web = Service.objects.create(owner=alice, name="web", runtime="python", state=ServiceState.RUNNING)
    Quota.objects.create(user=alice, storage_mb=1)
    Bucket.objects.create(storage=files, name="old", access_key="CPOLD0000000000000", secret_key="s", size=2 << 20)

    with pytest.raises(QuotaExceeded, match=r"quota exceeded: storage_mb \(1\) .* no room for a bucket in files"):
        set_links(web, [files], alice)

    assert not Link.objects.exists() and Bucket.objects.count() == 1


def test_a_link_to_a_missing_store_is_refused(alice):
    text = MANIFEST.format(nodes=1).replace("links: [files]", "links: [filez]")
    with pytest.raises(ManifestInvalid, match="no service named filez"):
        parse(text)


def test_the_workers_count_each_bucket_and_the_quota_counts_them(alice, queue, store, settings):
    settings.CONPAAS_QUOTA_STORAGE_MB = 2048
    run(queue, alice, MANIFEST.format(nodes=1))
    store.buckets["web"].update({"a": b"x" * 1000, "b": b"y" * 24})

    assert object_storage.count_due(max_age=0) == 1

    bucket = Bucket.objects.get()
    assert (bucket.object_count, bucket.size) == (2, 1024)
    assert object_storage.stored_bytes(alice) == 1024
    assert "s3.bucket.quota -name=web -op=set -sizeMB=2048\ns3.bucket.quota.enforce -apply\n" in store.scripts
    assert object_storage.count_due(max_age=3600) == 0  # counted just now


def volume(vid: int, placement: str) -> str:
    return f"volume Id:{vid}, Size:8, ReplicaPlacement:{placement}, Collection:web, Version:3\n"


def test_volumes_written_before_the_scale_out_are_copied_or_left_writable(alice, queue, store):
    files, _ = create(alice, queue)
    # Volume 1 gets its second copy; volume 2 cannot be copied (the store refused).
    store.volume_lists = [volume(1, "000") + volume(2, "000"), volume(1, "001") * 2 + volume(2, "001")]

    said = object_storage.replicate(files, 2)

    fix = next(script for script in store.scripts if "volume.fix.replication -apply" in script)
    assert "-volumeId=1 -replication=001" in fix and "-volumeId=2 -replication=001" in fix
    assert "volume.configure.replication -volumeId=2 -replication=000" in store.scripts[-1]
    assert "-volumeId=1" not in store.scripts[-1]
    assert said == "new writes on 2 of 2 volume servers; 1 older volume(s) could not be copied yet"


def heal_check(queue, service):
    with queue.capture_on_commit(execute=True):
        operation = healing.check(service)
    queue.run()
    if operation is not None:
        operation.refresh_from_db()
    return operation


def test_a_dead_volume_node_is_replaced_and_its_copies_made_again(alice, queue, cloud, store):
    files, _ = create(alice, queue)
    queue.start(lambda: request_scale(files, "backend", 2, alice))
    assert heal_check(queue, files) is None, "a store whose nodes answer needs nothing (and has no router)"
    first, second = files.live_nodes().order_by("created")
    cloud.stop(second.name)
    store.scripts.clear()

    operation = heal_check(queue, files)

    assert operation.state == OperationState.SUCCEEDED, operation.error
    second.refresh_from_db()
    assert second.state == NodeState.DESTROYED
    nodes = list(files.live_nodes().order_by("created"))
    assert len(nodes) == 2 and nodes[0] == first and nodes[1].state == NodeState.RUNNING
    assert files.server_node() == first, "the S3 gateway stays where it was: the same endpoint"
    assert any("volume.fix.replication -apply" in script for script in store.scripts)
    ended = Event.objects.get(operation=operation, action="heal", outcome="succeeded")
    assert f"replaced {second.name}" in ended.message


def test_a_dead_first_node_is_not_replaced_by_an_empty_store(alice, queue, cloud):
    files, _ = create(alice, queue)
    first = files.live_nodes().get()
    cloud.stop(first.name)

    operation = heal_check(queue, files)

    assert operation.state == OperationState.FAILED
    assert f"the store's first node {first.name} is dead: it holds the filer" in operation.error
    assert not files.live_nodes().exclude(pk=first.pk).exists(), "no empty store booted in its place"


def test_an_unlinked_or_deleted_service_loses_its_keys_and_its_bucket_stays(alice, queue, store):
    run(queue, alice, MANIFEST.format(nodes=1))
    files, web = Service.objects.get(name="files"), Service.objects.get(name="web")
    bucket = Bucket.objects.get()

    set_links(web, [], alice)

    assert "s3.configure -user=bucket-web -delete -apply\n" in store.scripts
    bucket.refresh_from_db()
    assert not bucket.granted and "web" in store.buckets and store.identities == {}
    # Linked again: the same bucket and keys, pushed again.
    set_links(web, [files], alice)
    bucket.refresh_from_db()
    assert bucket.granted and store.scripts[-1].startswith("s3.configure -user=bucket-web -actions=")

    store.scripts.clear()
    queue.start(lambda: lifecycle.request_delete(web, alice))
    assert store.scripts == ["s3.configure -user=bucket-web -delete -apply\n"]
    assert Bucket.objects.get().holder is None and "web" in store.buckets


def test_a_deleted_service_whose_store_does_not_answer_says_its_keys_stay_valid(alice, queue, store):
    run(queue, alice, MANIFEST.format(nodes=1))
    files, web = Service.objects.get(name="files"), Service.objects.get(name="web")
    store.down = True

    operation = queue.start(lambda: lifecycle.request_delete(web, alice))

    assert operation.state == OperationState.SUCCEEDED, operation.error
    said = Event.objects.get(service=files, action="storage", outcome="failed").message
    assert said.startswith("the keys of bucket web (of web, deleted) stay valid: revoking web")
