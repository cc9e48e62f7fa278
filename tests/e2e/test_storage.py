"""A storage service end to end: SeaweedFS on two isolated nodes, and a python app linked to it
that puts and gets objects with boto3 (installed by the build from its requirements.txt through
the package proxy), reading nothing but the variables the link gives; its keys reach its own
bucket only, and the store's admin keys are the owner's credentials call's alone. The second node
killed, nothing is lost, and self-healing replaces it."""

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import zip_archive

pytestmark = pytest.mark.integration

S3_APP = """\
import os

import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])  # keys and region: AWS_* variables
BUCKET = os.environ["S3_BUCKET"]


def application(environ, start_response):
    path, key = environ["PATH_INFO"], environ.get("QUERY_STRING", "")
    try:
        if path == "/put":
            s3.put_object(Bucket=BUCKET, Key=key, Body=environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
            body = b"stored"
        elif path == "/get":
            body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        elif path == "/other":  # a bucket that is not the app's own
            s3.list_objects_v2(Bucket=key)
            body = b"listed"
        else:
            body = BUCKET.encode()
    except Exception as exc:
        body = f"error: {type(exc).__name__}: {exc}".encode()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]
"""

MANIFEST = """\
application: album
services:
  files:
    runtime: storage
    nodes: 2
  photos:
    runtime: python
    links: [files]
    versions: {v1: ./photos.zip}
    environments: {production: v1}
"""


def test_a_linked_app_puts_and_gets_objects_with_boto3_in_its_own_bucket_only(control_plane):
    import boto3

    api = control_plane.client("album")
    archive = zip_archive({"wsgi.py": S3_APP, "requirements.txt": "boto3\n"})
    applied = api.post(
        "/api/v1/applications/apply/", data={"manifest": MANIFEST}, files={"./photos.zip": ("photos.zip", archive)}
    )
    assert applied.status_code in (200, 202), applied.text
    services = {s["name"]: s for s in api.get("/api/v1/services/").json()}
    try:
        for operation in applied.json()["operations"]:
            done = api.wait_operation(operation, timeout=400)
            assert done["state"] == "succeeded", done["error"]
        files = api.get(f"/api/v1/services/{services['files']['id']}/").json()
        photos = api.get(f"/api/v1/services/{services['photos']['id']}/").json()
        assert len(files["nodes"]) == 2
        url = photos["url"].rstrip("/")
        assert requests.get(url + "/", timeout=10).text == "photos"

        body = bytes(range(256)) * 256
        assert requests.post(url + "/put?cat.jpg", data=body, timeout=30).text == "stored"
        assert requests.get(url + "/get?cat.jpg", timeout=30).content == body

        creds = api.get(f"/api/v1/services/{files['id']}/credentials/").json()
        admin = boto3.client(
            "s3",
            endpoint_url=creds["url"],
            aws_access_key_id=creds["access_key"],
            aws_secret_access_key=creds["secret_key"],
            region_name="us-east-1",
        )
        assert admin.get_object(Bucket="photos", Key="cat.jpg")["Body"].read() == body
        admin.create_bucket(Bucket="private")
        denied = requests.get(url + "/other?private", timeout=30).text
        assert denied.startswith("error: ") and "AccessDenied" in denied, denied

        replicated = [e["message"] for e in api.get(f"/api/v1/services/{files['id']}/events/").json()]
        assert any(m.startswith("every object on 2 of 2 volume servers") for m in replicated), replicated

        # The second node dies: every object is still read; healing replaces the node, and puts
        # (which need both copies) work again.
        second = api.get(f"/api/v1/services/{files['id']}/nodes/").json()[-1]["name"]
        control_plane.kill_node(second)
        assert requests.get(url + "/get?cat.jpg", timeout=30).content == body

        def healed():
            events = api.get(f"/api/v1/services/{files['id']}/events/").json()
            return next((e for e in events if e["action"] == "heal" and e["message"].startswith("healed in ")), None)

        heal = wait_until(healed, timeout=180, interval=1, message="the store's dead node to be replaced")
        assert f"replaced {second}" in heal["message"], heal
        assert requests.post(url + "/put?dog.jpg", data=body, timeout=60).text == "stored"
        assert requests.get(url + "/get?cat.jpg", timeout=30).content == body

        seen = (
            api.get(f"/api/v1/services/{photos['id']}/").text + api.get(f"/api/v1/services/{files['id']}/events/").text
        )
        assert creds["secret_key"] not in seen
    finally:
        application = next(a for a in api.get("/api/v1/applications/").json() if a["name"] == "album")
        for operation in api.delete(f"/api/v1/applications/{application['id']}/").json():
            api.wait_operation(operation, timeout=120)
