"""The test S3 store itself: what the backup and storage tests stand on."""

import pytest
from botocore.exceptions import ClientError

from tests.s3_store import S3Store

pytestmark = pytest.mark.integration


def test_store_keeps_objects_and_refuses_wrong_keys(s3_store):
    client = s3_store.client()
    client.create_bucket(Bucket="kept")
    client.put_object(Bucket="kept", Key="a/b", Body=b"x" * 65536)
    assert client.get_object(Bucket="kept", Key="a/b")["Body"].read() == b"x" * 65536
    stranger = S3Store(s3_store.endpoint, s3_store.access_key, "not-the-secret")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        stranger.client().list_buckets()
