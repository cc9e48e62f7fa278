"""`conpaas autoscale SERVICE --p95 MS --min N --max N | --off` against a live control plane (`server`)."""

import pytest


@pytest.fixture
def service(alice):
    return alice.create_service("cli-auto")


def policy(alice, service) -> dict:
    return alice.get(f"/api/v1/services/{service['id']}/autoscaling/").json()


def test_it_turns_autoscaling_on_shows_it_and_turns_it_off(cli, logged_in, service):
    on = cli("autoscale", "cli-auto", "--p95", "300", "--min", "1", "--max", "3")
    assert on.code == 0, on.err
    assert on.out == (
        "autoscaling cli-auto: p95 under 300 ms with 1 to 3 backend node(s), cool-down 30 s; 1 running now\n"
    )
    saved = policy(logged_in, service)
    assert (saved["enabled"], saved["target_p95_ms"], saved["min_nodes"], saved["max_nodes"]) == (True, 300, 1, 3)

    changed = cli("autoscale", "cli-auto", "--cooldown", "60", "--json")
    assert changed.code == 0, changed.err
    assert changed.json()["cooldown_s"] == 60 and changed.json()["target_p95_ms"] == 300, "the rest is kept"

    shown = cli("autoscale", str(service["id"]))
    assert shown.code == 0 and shown.out.startswith("autoscaling cli-auto: p95 under 300 ms")

    off = cli("autoscale", "cli-auto", "--off")
    assert off.code == 0, off.err
    assert off.out.startswith("autoscaling of cli-auto is off (1 backend node(s) running)")
    assert policy(logged_in, service)["enabled"] is False


def test_it_says_which_value_the_server_refused_and_changes_nothing(cli, logged_in, service):
    # A saved policy (a service's unsaved one is answered with `updated` now, at every request).
    saved = {"enabled": False, "target_p95_ms": 300, "min_nodes": 1, "max_nodes": 3}
    assert logged_in.put(f"/api/v1/services/{service['id']}/autoscaling/", json=saved).status_code == 200
    before = policy(logged_in, service)

    low = cli("autoscale", "cli-auto", "--p95", "250", "--min", "0")
    assert low.code == 1 and low.out == ""
    assert "error: min_nodes: " in low.err and "A service keeps at least 1 backend node." in low.err

    target = cli("autoscale", "cli-auto", "--p95", "0")
    assert target.code == 1
    assert target.err == "error: target_p95_ms: The target is a response time above 0 ms.\n"

    quota = cli("autoscale", "cli-auto", "--max", "1000")
    assert quota.code == 1
    assert quota.err.startswith("error: max_nodes: your node quota (40) leaves cli-auto at most ")

    assert policy(logged_in, service) == before


def test_off_takes_no_other_option_and_a_service_must_exist(cli, logged_in, service):
    both = cli("autoscale", "cli-auto", "--off", "--p95", "250")
    assert both.code == 2 and both.err == "error: --off takes no other option\n"

    missing = cli("autoscale", "no-such-service", "--p95", "250")
    assert missing.code == 1 and "no-such-service" in missing.err
