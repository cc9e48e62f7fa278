"""A real S3 store for tests: SeaweedFS's `weed server` (master, volume, filer and S3 gateway in one
process) on free loopback ports, with one admin identity, in a directory of the test's own.
Stopped by its PID when the fixture ends, even when the test fails."""

import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conpaas_common.procs import free_port, pid_alive
from conpaas_common.waiting import wait_until

WEED = Path(sys.executable).with_name("weed")


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )


def start_weed(home: Path) -> tuple[subprocess.Popen, S3Store]:
    home.mkdir(parents=True, exist_ok=True)
    store = S3Store("", "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24))
    config = home / "s3.json"
    identity = {"name": "admin", "credentials": [{"accessKey": store.access_key, "secretKey": store.secret_key}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    os.chmod(config, 0o600)
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    argv = [str(WEED), "server", f"-dir={home / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    # Volumes of 1 GiB, up to 100 (sparse files): `-volume.max=0` sizes the store by free disk
    # / 30 GiB, which on a disk with less than ~90 GB free is 2 volumes, both taken by the filer,
    # and a bucket then gets none ("No writable volumes").
    argv += ["-master.telemetry=false", "-metricsPort=0", "-master.volumeSizeLimitMB=1024", "-volume.max=100"]
    argv += ["-filer", "-s3"]
    argv += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}"]
    for name, port in ports.items():
        # gRPC ports are the HTTP port + 10000 by default: pick free ones too.
        argv += [f"-{name}.port={port}", f"-{name}.port.grpc={free_port()}"]
    (home / "data").mkdir(exist_ok=True)
    log = open(home / "weed.log", "ab")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    store = S3Store(f"http://127.0.0.1:{ports['s3']}", store.access_key, store.secret_key)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"weed server exited: {(home / 'weed.log').read_text()[-2000:]}")
        try:
            store.client().list_buckets()
            return True
        except Exception:
            return False

    wait_until(answers, timeout=30, interval=0.2, message="the S3 store to answer")
    return process, store


def stop_weed(process: subprocess.Popen) -> None:
    # A test's store holds nothing worth a graceful stop (weed takes 10 s over it).
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not pid_alive(process.pid)


@pytest.fixture
def s3_store(tmp_path):
    """A running S3 store; `s3_store.client()` is an admin boto3 client."""
    process, store = start_weed(tmp_path / "weed")
    try:
        yield store
    finally:
        stop_weed(process)
