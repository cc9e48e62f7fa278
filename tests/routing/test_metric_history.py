"""The kept metrics: one raw point per environment and sampling slot, rolled up into minute
averages after an hour and dropped after a day (routing/metrics.py), so rows stay bounded."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.module_loading import import_string

from routing.metrics import MINUTE_KEEP, RAW_KEEP, max_points, roll_up, sample_due, series
from routing.models import MetricPoint, Resolution
from tests.factories import ServiceFactory
from workflows import tasks

pytestmark = pytest.mark.django_db

START = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def figures(requests, p95, rate=None, **more):
    rate = requests / 5 if rate is None else rate
    return {"requests": requests, "request_rate": rate, "arrival_rate": rate, "p50_ms": p95, "p95_ms": p95, **more}


def test_it_saves_one_point_per_environment_and_slot(shop, fleet, settings):
    settings.CONPAAS_METRICS_INTERVAL = 5
    fleet.figures["shop-1"] = {"production": figures(40, 120.0, served_rate=7.5, live_connections=3)}

    assert sample_due(START + timedelta(seconds=1)) == [shop]
    assert sample_due(START + timedelta(seconds=4)) == [], "the same slot: not asked again"

    assert len(fleet.calls_to("proxy_metrics")) == 1
    assert fleet.calls_to("proxy_metrics")[0][2] == 5, "the figures of the last interval"
    points = {p.environment: p for p in MetricPoint.objects.all()}
    assert set(points) == {"production", "development"}
    production = points["production"]
    assert production.time == START and production.resolution == Resolution.RAW
    assert (production.requests, production.request_rate, production.p95_ms) == (40, 8.0, 120.0)
    assert (production.served_rate, production.live_connections) == (7.5, 3)
    assert points["development"].requests == 0 and points["development"].p95_ms is None


def test_a_router_that_does_not_answer_leaves_a_gap(shop, fleet):
    fleet.unreachable.add("shop-1")

    assert sample_due(START) == []
    assert not MetricPoint.objects.exists()


def test_a_minute_average_stands_for_its_raw_points(shop):
    def raw(second, requests, p95, rate, connections):
        MetricPoint.objects.create(
            service=shop,
            environment="production",
            time=START + timedelta(seconds=second),
            requests=requests,
            request_rate=rate,
            arrival_rate=rate,
            served_rate=rate,
            p50_ms=p95 / 2 if p95 else None,
            p95_ms=p95,
            error_rate=0.5 if requests == 30 else 0.0,
            live_connections=connections,
        )

    raw(20, 10, 100.0, 2.0, 1)
    raw(40, 30, 200.0, 6.0, 3)
    raw(60, 0, None, 0.0, 2)  # (12:00:00, 12:01:00] ends here
    raw(65, 5, 50.0, 1.0, 0)  # the next minute

    assert roll_up(START + timedelta(seconds=RAW_KEEP + 59)) == 0, "that minute is not all past the hour yet"
    assert roll_up(START + timedelta(seconds=RAW_KEEP + 60)) == 1
    assert roll_up(START + timedelta(seconds=RAW_KEEP + 60)) == 0, "each minute is rolled up once"

    minute = MetricPoint.objects.get(resolution=Resolution.MINUTE)
    assert minute.time == START + timedelta(seconds=60)
    assert minute.requests == 40
    assert minute.p95_ms == 175.0  # (10 × 100 + 30 × 200) / 40
    assert minute.p50_ms == 87.5
    assert minute.error_rate == 0.375  # (30 × 0.5) / 40
    assert minute.request_rate == round(8 / 3, 3) and minute.live_connections == 2
    left = MetricPoint.objects.filter(resolution=Resolution.RAW)
    assert [p.time for p in left] == [START + timedelta(seconds=65)], "the minute's raw points are gone"


# 1,560 passes of sampling and roll-up: what it checks is arithmetic over the rows, the same on any
# database (the queries are the other tests'), so in the first pass only.
@pytest.mark.one_pass
def test_rows_stay_bounded_over_a_day_and_more(shop, fleet, settings):
    # A pass a minute (the default is 5 s): 26 hours are 1,560 passes, and the rules are the same.
    settings.CONPAAS_METRICS_INTERVAL = 60
    fleet.figures["shop-1"] = {"production": figures(100, 80.0)}
    now = START
    most = 0
    while now < START + timedelta(hours=26):
        sample_due(now)
        roll_up(now)
        if now.second == 0 and now.minute % 15 == 0:
            most = max(most, MetricPoint.objects.filter(environment="production").count())
        last_pass, now = now, now + timedelta(seconds=60)

    production = MetricPoint.objects.filter(environment="production")
    assert most <= max_points() and production.count() <= max_points()
    raw = production.filter(resolution=Resolution.RAW)
    minutes = production.filter(resolution=Resolution.MINUTE)
    assert RAW_KEEP / 60 <= raw.count() <= (RAW_KEEP + 60) / 60 + 1
    assert (MINUTE_KEEP - RAW_KEEP) / 60 - 1 <= minutes.count() <= (MINUTE_KEEP - RAW_KEEP) / 60 + 1
    assert production.order_by("time").first().time >= last_pass - timedelta(seconds=MINUTE_KEEP), "a day at most"
    assert {p.requests for p in minutes} == {100}, "one raw point of 100 requests a minute"


def test_a_series_is_the_kept_points_of_the_window_oldest_first(shop):
    def point(seconds_ago, resolution=Resolution.RAW, environment="production"):
        MetricPoint.objects.create(
            service=shop, environment=environment, resolution=resolution, time=START - timedelta(seconds=seconds_ago)
        )

    point(7200, Resolution.MINUTE)
    point(3700, Resolution.MINUTE)
    point(10)
    point(5, environment="development")
    point(0)

    kept = series(shop, 3600 + 200, now=START)
    assert [p.time for p in kept["production"]] == [START - timedelta(seconds=s) for s in (3700, 10, 0)]
    assert len(kept["development"]) == 1
    assert {name: len(points) for name, points in series(shop, 8, now=START).items()} == {
        "production": 1,
        "development": 1,
    }


def test_the_timers_pass_samples_decides_and_rolls_up(shop, fleet):
    fleet.figures["shop-1"] = {"production": figures(10, 50.0)}

    assert tasks.sample_metrics() == 1

    assert MetricPoint.objects.filter(service=shop, environment="production", requests=10).exists()


def test_the_timers_pass_is_three_queries_when_nothing_runs(db, fleet):
    ServiceFactory(name="idle")  # no router runs
    with CaptureQueriesContext(connection) as queries:
        assert tasks.sample_metrics() == 0
    assert len(queries) == 3, [q["sql"] for q in queries]
    assert fleet.calls == []


def test_the_timer_queues_the_metrics_task_by_its_name(monkeypatch):
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda func, **options: queued.append((func, options)))

    tasks.queue_metrics_sample()

    assert queued == [("workflows.tasks.sample_metrics", {"task_name": "sample-metrics", "save": False})]
    assert import_string(queued[0][0]) is tasks.sample_metrics
