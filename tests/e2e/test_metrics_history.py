"""Metrics of the real router: the live figures count every request; under a little load, the
control plane's timer samples the router and the API's series shows it, non-zero, within a few
sampling intervals."""

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import label_app

pytestmark = pytest.mark.integration


@pytest.fixture
def api(control_plane):
    return control_plane.client("carol")


@pytest.fixture
def service(api):
    service = api.create_service("kept")
    yield service
    api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())


def test_it_counts_every_request_and_keeps_non_zero_figures_of_a_little_load(api, service):
    sid, url = service["id"], service["url"]
    v1 = api.upload(sid, label_app("kept"), "v1").json()
    assert api.deploy(sid, "production", v1["id"])["state"] == "succeeded"
    for _ in range(25):
        requests.get(url, timeout=10)

    def counted():
        figures = api.get(f"/api/v1/services/{sid}/metrics/").json()["environments"]
        return figures if figures.get("production", {}).get("requests") == 25 else None

    production = wait_until(counted, timeout=10, message="25 requests in the live figures")["production"]
    assert production["error_rate"] == 0.0
    assert production["p50_ms"] is not None and production["p50_ms"] <= production["p95_ms"]
    assert production["request_rate"] > 0 and production["live_connections"] == 0

    def loaded_point():
        for _ in range(10):  # a little load, sent while we wait: ~20 requests a second at most
            assert requests.get(url, timeout=10).text == "v1\n"
        series = api.get(f"/api/v1/services/{sid}/metrics/?window=120").json()["series"]
        busy = [p for p in series.get("production", []) if p["requests"] > 0]
        return busy[-1] if busy else None

    point = wait_until(loaded_point, timeout=40, interval=0.5, message="a kept point with requests")
    assert point["seconds"] == 5
    assert point["request_rate"] > 0 and point["arrival_rate"] > 0
    assert point["p50_ms"] is None or 0 <= point["p50_ms"] <= point["p95_ms"]
    assert point["error_rate"] == 0.0

    # Sampled log lines come one in eight: within a few intervals some carry a percentile.
    def timed():
        for _ in range(10):
            requests.get(url, timeout=10)
        series = api.get(f"/api/v1/services/{sid}/metrics/?window=120").json()["series"]["production"]
        return [p for p in series if p["p95_ms"] is not None and p["served_rate"]]

    assert wait_until(timed, timeout=40, interval=0.5, message="a kept point with a p95")
