"""The service page's charts: server-drawn SVG from the kept metrics, no router asked."""

from datetime import timedelta

import pytest
from django.utils import timezone

from console.charts import HEIGHT, WIDTH, charts, nice_top
from routing.models import MetricPoint, Resolution
from tests.factories import ServiceFactory
from workflows.models import Autoscaling

pytestmark = pytest.mark.django_db


def point(service, seconds_ago, environment="production", **figures):
    return MetricPoint.objects.create(
        service=service, environment=environment, time=timezone.now() - timedelta(seconds=seconds_ago), **figures
    )


def test_it_draws_the_kept_points_of_production_as_svg_lines(client, service, settings):
    settings.CONPAAS_METRICS_INTERVAL = 5
    for seconds_ago, rate in ((15, 10.0), (10, 20.0), (5, 40.0)):
        point(service, seconds_ago, request_rate=rate, p50_ms=30.0, p95_ms=90.0, live_connections=2)
    Autoscaling.objects.create(service=service, enabled=True, target_p95_ms=250)

    page = client.get(f"/services/{service.pk}/").content.decode()

    assert '<h2 id="metrics-title">Metrics</h2>' in page
    assert page.count("<svg") == 4
    assert page.count('<polyline class="line-solid"') == 4, "requests, p95, 5xx, connections"
    assert '<polyline class="line-dashed"' in page, "p50"
    assert '<polyline class="line-target"' in page, "the autoscaling target"
    assert 'aria-label="Requests of production over the last 1 hour: requests now 40 req/s"' in page
    assert "cdn" not in page and "<script>" not in page.split("<main")[1], "nothing but the page's own files"


def test_the_fragment_redraws_another_window_and_environment(client, service):
    point(service, 30, environment="development", request_rate=3.0)

    fragment = client.get(f"/services/{service.pk}/metrics/?window=900&env=development")

    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert html.startswith('<section class="card" id="metrics"') and "<html" not in html
    assert f'hx-get="/services/{service.pk}/metrics/?window=900&amp;env=development"' in html
    assert "Requests of development over the last 15 min: requests now 3 req/s" in html
    assert '<polyline class="line-solid"' in html, "a lone point is drawn too"


def test_an_unknown_window_or_environment_falls_back_to_the_defaults(client, service):
    html = client.get(f"/services/{service.pk}/metrics/?window=7&env=nope").content.decode()

    assert "of production over the last 1 hour" in html
    assert "No figures kept for production in this window yet" in html
    assert "<polyline" not in html


def test_another_users_metrics_are_not_found(client, bob):
    assert client.get(f"/services/{ServiceFactory(owner=bob).pk}/metrics/").status_code == 404


def test_a_line_breaks_where_points_are_missing():
    now = timezone.now()

    class Point:
        resolution = Resolution.RAW
        p50_ms = p95_ms = None
        error_rate = live_connections = 0.0

        def __init__(self, seconds_ago, rate):
            self.time, self.request_rate = now - timedelta(seconds=seconds_ago), rate

    points = [Point(60, 1.0), Point(55, 2.0), Point(20, 4.0), Point(15, 4.0), Point(10, 5.0)]
    requests = charts(points, 60, now, interval=5)[0]

    [line] = requests.lines
    assert len(line.segments) == 2, "a gap of 35 s between two 5 s points"
    assert requests.top == 10.0 and line.latest == 5.0
    first = line.segments[0].split()
    assert first == ["0.0,108.0", f"{WIDTH * 5 / 60:.1f},96.0"]
    assert line.segments[1].split()[-1] == f"{WIDTH * 50 / 60:.1f},{HEIGHT - 5.0 / 10.0 * HEIGHT:.1f}"


def test_the_scale_tops_at_a_round_number():
    assert [nice_top(v) for v in (0, 0.3, 1, 7, 12, 250, 260)] == [1.0, 0.5, 1, 10, 20, 500, 500]
