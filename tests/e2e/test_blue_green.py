"""The blue-green core, end to end: real control plane, real nodes, real HAProxy, real servers of
each runtime. How the router picks an environment (header, parameter, cookie, unknown keys):
tests/agent/test_proxy.py; what a swap refuses and restores: tests/workflows/test_swap.py."""

import json
import os
import signal
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from conpaas_common.waiting import wait_until
from tests.apps import label_app, label_archive
from tests.load import OpenLoop

pytestmark = pytest.mark.integration


def fetch(url: str, session=None, **kwargs) -> requests.Response:
    return (session or requests).get(url, timeout=10, **kwargs)


def environments(api, service_id) -> dict:
    return {env["name"]: env for env in api.get(f"/api/v1/services/{service_id}/environments/").json()}


@pytest.fixture
def shop(control_plane, request):
    """A service with v1 in production and v2 in development, each answering its label: python,
    or the runtime a test asks for (`@pytest.mark.parametrize("shop", RUNTIMES, indirect=True)`)."""
    runtime = getattr(request, "param", "python")
    api = control_plane.client("carol")
    service = api.create_service("shop", runtime)
    sid = service["id"]
    (archive1, name1), (archive2, name2) = label_archive(runtime, "v1"), label_archive(runtime, "v2")
    v1 = api.upload(sid, archive1, "v1", filename=name1)
    v2 = api.upload(sid, archive2, "v2", filename=name2)
    assert v1.status_code == v2.status_code == 201, (v1.text, v2.text)
    v1, v2 = v1.json(), v2.json()
    assert api.deploy(sid, "production", v1["id"])["state"] == "succeeded"
    assert api.deploy(sid, "development", v2["id"])["state"] == "succeeded"
    yield api, api.get(f"/api/v1/services/{sid}/").json(), v1, v2
    operation = api.delete(f"/api/v1/services/{sid}/").json()
    api.wait_operation(operation)


# What a client may forge about itself; the router replaces each (router/config.py).
FORGED = {
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "forged.example",
    "Forwarded": "for=6.6.6.6;proto=https",
}
# Where each runtime's label app says who sent the request (tests/apps.py); static has none.
FORWARDED_PATHS = {"python": "forwarded", "php": "forwarded", "java": "forwarded.jsp"}


def client_address(url: str) -> str:
    """This machine's address as the router at `url` sees it (the source of a route to it)."""
    parts = urlsplit(url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((parts.hostname, parts.port or 80))
        return probe.getsockname()[0]


def assert_told_the_client(url: str, runtime: str) -> None:
    """The app is told the client's address, scheme and host as its router saw them, not what
    the client forged; php and java have it as their remote address too (python's is the router's;
    Tomcat's RemoteIpValve takes X-Forwarded-For off the request once it believed it)."""
    if runtime not in FORWARDED_PATHS:
        return
    answer = fetch(url + FORWARDED_PATHS[runtime], headers=FORGED)
    assert answer.status_code == 200, answer.text
    seen = dict(field.split("=", 1) for field in answer.text.split())
    client = client_address(url)
    host = urlsplit(url).netloc.removesuffix(":80")  # the Host header requests sent
    told = client if runtime != "java" else "null"
    assert (seen["for"], seen["proto"], seen["host"]) == (told, "http", host), answer.text
    if runtime != "python":
        assert seen["remote"] == client, answer.text


def assert_revalidated(url: str, before: requests.Response, now: str) -> None:
    """A static file changed by a swap is never answered 304 to a client holding the old one,
    even when its size did not change (packing gives every file the same time)."""
    for condition in (
        {"If-None-Match": before.headers["ETag"]},
        {"If-Modified-Since": before.headers["Last-Modified"]},
    ):
        answer = fetch(url, headers=condition)
        assert (answer.status_code, answer.text) == (200, now), condition
        assert answer.headers["ETag"] != before.headers["ETag"]
        assert answer.headers["Cache-Control"] == "no-cache"
    assert fetch(url, headers={"If-None-Match": answer.headers["ETag"]}).status_code == 304


def a_second_of(load: OpenLoop) -> None:
    """Wait while a second's worth of the load's requests are answered."""
    since = time.monotonic()
    wait_until(lambda: len(load.snapshot(since)) >= load.rate, timeout=15, message="a second of load answered")


# Every runtime is routed, swapped, scaled and logged by the same code: only what runs behind a
# server differs. One pass per runtime: v1 in production, v2 in development (the shop fixture).
@pytest.mark.parametrize("shop", ["python", "php", "java", "static"], indirect=True)
def test_each_runtime_previews_swaps_under_load_scales_and_logs(shop):
    api, service, v1, v2 = shop
    url, sid = service["url"], service["id"]
    key = environments(api, sid)["development"]["preview_key"]

    assert fetch(url, headers={"X-Conpaas-Env": key}).text == "v2\n"
    browser = requests.Session()
    assert fetch(f"{url}?conpaas-env={key}", browser).text == "v2\n"
    assert browser.cookies.get("conpaas-env") == key, "the parameter sets the preview cookie"
    assert fetch(url, browser).text == "v2\n"
    assert fetch(url, cookies={"conpaas-env": key}).text == "v2\n"

    assert_told_the_client(url, service["runtime"])
    served_v1 = fetch(url)

    # A light load through the swaps and the scaling; its marker finds its lines in the logs. It
    # forges its address: the access logs show the real one.
    marker = f"load-{service['runtime']}"
    load = OpenLoop(f"{url}?{marker}", rate=15, headers=FORGED).start()
    took = {}
    try:
        a_second_of(load)
        swapped = api.post(f"/api/v1/services/{sid}/swap/", json={"environment": "development"})
        assert swapped.status_code == 200, swapped.text
        assert swapped.json() == {"production": v2["id"], "development": v1["id"]}
        assert fetch(url).text == "v2\n"
        assert fetch(url, headers={"X-Conpaas-Env": key}).text == "v1\n"
        if service["runtime"] == "static":
            assert_revalidated(url, served_v1, "v2\n")
        a_second_of(load)

        back = api.post(f"/api/v1/services/{sid}/swap/", json={})
        assert back.status_code == 200, back.text
        assert back.json() == {"production": v1["id"], "development": v2["id"]}
        assert fetch(url).text == "v1\n"
        assert fetch(url, headers={"X-Conpaas-Env": key}).text == "v2\n"
        a_second_of(load)

        for nodes in (2, 1):
            asked = time.monotonic()
            scaled = api.post(f"/api/v1/services/{sid}/scale/", json={"role": "backend", "nodes": nodes})
            assert scaled.status_code == 202, scaled.text
            assert api.wait_operation(scaled.json(), timeout=180)["state"] == "succeeded"
            took[nodes] = time.monotonic() - asked
            running = api.get(f"/api/v1/services/{sid}/nodes/").json()
            assert len(running) == nodes and all(node["state"] == "running" for node in running)
            assert {fetch(url).text for _ in range(10)} == {"v1\n"}, f"production answers on {nodes} node(s)"
            for _ in range(2 * nodes):  # round robin: on 2 nodes, one instance reached over TCP
                assert_told_the_client(url, service["runtime"])
            assert fetch(url, headers={"X-Conpaas-Env": key}).text == "v2\n"
            a_second_of(load)
    finally:
        answers = load.stop()
    # The raw body: a runtime may send it chunked.
    labels = [next((label for label in ("v1", "v2") if f"{label}\n".encode() in a.body), None) for a in answers]
    failed = [a for a, label in zip(answers, labels, strict=True) if a.status != 200 or label is None]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    assert set(labels) == {"v1", "v2"}, "the load saw both versions"
    print(
        f"\n{service['runtime']}: {len(answers)} requests at {load.rate}/s through the swaps and the scaling, "
        f"none failed, slowest {max(a.seconds for a in answers) * 1000:.0f} ms; "
        f"scale 1 -> 2 took {took[2]:.1f} s, 2 -> 1 {took[1]:.1f} s"
    )

    history = [event["message"] for event in api.get(f"/api/v1/services/{sid}/events/").json()]
    assert any("production now serves v2" in message for message in history)
    logs = api.get(f"/api/v1/services/{sid}/logs/?environment=production&lines=1000").json()
    assert (logs["version"], logs["errors"]) == (v1["id"], [])
    logged = [line for line in logs["lines"] if line["file"] == "access.log" and marker in line["line"]]
    assert logged, f"production's access log shows the load: {logs['lines'][-5:]}"
    client = client_address(url)
    assert all(line["line"].startswith(f"{client} ") for line in logged), f"the client's address: {logged[:3]}"
    assert {line["instance"] for line in logged} == {f"{running[0]['name']}-v{v1['id']}"}


def test_it_serves_while_the_control_plane_is_down_and_restarts_what_stopped_meanwhile(control_plane):
    api = control_plane.client("carol")
    with api.serving("steady", "python", label_app("steady"), "app.zip") as (service, version):
        node = service["nodes"][0]["name"]
        instance = f"{node}-v{version['id']}"
        state = json.loads((control_plane.home / "nodes" / node / "state.json").read_text())
        control_plane.stop()
        try:
            for _ in range(20):
                assert fetch(service["url"]).text == "steady\n"
            os.kill(state["instances"][instance]["pid"], signal.SIGTERM)  # it dies with nobody watching
            wait_until(lambda: fetch(service["url"]).status_code == 503, timeout=30, message="production to go down")
        finally:
            control_plane.start()
        wait_until(lambda: fetch(service["url"]).text == "steady\n", timeout=60, message="the restart to bring it back")

        # The router may reach the new process (the same unix socket) a moment before the restart's
        # event is written.
        def restart_recorded() -> bool:
            events = [e["message"] for e in api.get(f"/api/v1/services/{service['id']}/events/").json()]
            return any(f"restarted {instance}" in message for message in events)

        wait_until(restart_recorded, timeout=10, message="the restart's event")
