"""GET /api/v1/services/{id}/metrics/?window=SECONDS: the live figures of the routers, as before,
plus the kept `series` of each environment over the window."""

from datetime import timedelta

import pytest
from django.utils import timezone

from routing.models import MetricPoint, Resolution

pytestmark = pytest.mark.django_db


def point(service, seconds_ago, resolution=Resolution.RAW, environment="production", **figures):
    return MetricPoint.objects.create(
        service=service,
        environment=environment,
        resolution=resolution,
        time=timezone.now() - timedelta(seconds=seconds_ago),
        **figures,
    )


def test_it_adds_the_kept_series_of_the_window_to_the_live_figures(api, service, settings):
    settings.CONPAAS_METRICS_INTERVAL = 5
    point(service, 7000, Resolution.MINUTE, requests=600, p95_ms=80.0)
    point(service, 10, requests=50, request_rate=10.0, arrival_rate=12.0, served_rate=9.5, p50_ms=20.0, p95_ms=90.0)
    point(service, 5, environment="development", requests=1, error_rate=1.0)
    point(service, 4000, requests=7)  # outside a 3600 s window

    response = api.get(f"/api/v1/services/{service.pk}/metrics/?window=3600")

    assert response.status_code == 200
    body = response.json()
    assert body["window_seconds"] == 3600 and body["environments"] == {}  # no router runs: no live figures
    assert body["series_seconds"] == 3600
    [production] = body["series"]["production"]
    assert {k: v for k, v in production.items() if k != "time"} == {
        "seconds": 5,
        "requests": 50,
        "request_rate": 10.0,
        "arrival_rate": 12.0,
        "served_rate": 9.5,
        "p50_ms": 20.0,
        "p95_ms": 90.0,
        "error_rate": 0.0,
        "live_connections": 0.0,
    }
    assert body["series"]["development"][0]["error_rate"] == 1.0


def test_a_window_beyond_an_hour_reaches_the_minute_averages_of_the_day(api, service):
    point(service, 7000, Resolution.MINUTE, requests=600)
    point(service, 10, requests=50)

    body = api.get(f"/api/v1/services/{service.pk}/metrics/?window=999999").json()

    assert body["window_seconds"] == 3600, "the routers keep an hour"
    assert body["series_seconds"] == 86400, "the kept history, a day"
    assert [(p["seconds"], p["requests"]) for p in body["series"]["production"]] == [(60, 600), (5, 50)]


def test_without_a_window_it_answers_the_last_minute(api, service):
    point(service, 10, requests=50)
    point(service, 100, requests=7)

    body = api.get(f"/api/v1/services/{service.pk}/metrics/").json()

    assert body["window_seconds"] == 60 and body["series_seconds"] == 60
    assert [p["requests"] for p in body["series"]["production"]] == [50]


def test_a_window_that_is_not_a_number_is_refused(api, service):
    response = api.get(f"/api/v1/services/{service.pk}/metrics/?window=soon")

    assert response.status_code == 400
    assert response.json() == {"window": "a whole number of seconds"}
