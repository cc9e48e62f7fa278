"""The console in a real browser (Debian's Chromium, headless) against a real control plane, and
the console's cookies kept from the apps it runs.

Screenshots of the main pages at laptop and phone widths go to test-artifacts/console/."""

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conpaas_common.procs import free_port
from tests.apps import cookie_echo_app, label_app, zip_archive
from tests.harness import REPO

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "console"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
PASSWORD = "pw-secret-1"
SLOW = 90_000  # ms: booting a node or deploying a version


@pytest.fixture(scope="module")
def browser():
    # `./run tests` installs both; a missing one is a broken set-up, not a reason to skip.
    from playwright import sync_api

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is not installed (apt-get install chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}-{page.viewport_size['width']}.png"), full_page=True)


def sign_in(browser, base: str, username: str, viewport=LAPTOP):
    from playwright.sync_api import expect

    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(base + "/")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Your services")).to_be_visible()
    return context, page


def body_of(page) -> str:
    return page.locator("body").inner_text().strip()


def test_it_runs_the_blue_green_flow_in_a_browser(control_plane, browser, tmp_path):
    from playwright.sync_api import expect

    base = control_plane.url
    control_plane.create_user("dora", PASSWORD)
    control_plane.create_user("eve", PASSWORD)

    login = browser.new_page(viewport=LAPTOP)
    login.goto(base + "/login/")
    shot(login, "login")
    login.close()

    context, page = sign_in(browser, base, "dora")
    shot(page, "dashboard-empty")

    # Create a service; the page follows the create operation until the node runs.
    page.get_by_role("link", name="New service").first.click()
    page.get_by_label("Name").fill("web")
    page.get_by_label("Runtime").select_option("python")
    shot(page, "service-create")
    page.get_by_role("button", name="Create service").click()
    expect(page.get_by_role("heading", name="web", exact=True)).to_be_visible()
    expect(page.get_by_test_id("service-state")).to_have_text("running", timeout=SLOW)
    production_url = page.get_by_test_id("production-url").get_attribute("href")
    service_page = page.url

    # A refused archive: the reason shows in place, nothing is stored.
    bad = tmp_path / "bad.zip"
    bad.write_bytes(zip_archive({"index.html": "no wsgi here"}))
    page.get_by_label("Drop an archive here").set_input_files(str(bad))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-error")).to_contain_text("Upload refused:")
    shot(page, "upload-refused")

    # A file over the upload limit is refused by the script before it is sent (sparse: no disk used).
    huge = tmp_path / "huge.zip"
    with open(huge, "wb") as f:
        f.truncate(101 * 2**20)
    page.get_by_label("Drop an archive here").set_input_files(str(huge))
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-error")).to_have_text("Upload refused: the upload is larger than the limit of 100 MB.")

    # Two code versions, uploaded with the progress script.
    for n in (1, 2):
        archive = tmp_path / f"app-v{n}.zip"
        archive.write_bytes(label_app(str(n)))
        page.get_by_label("Drop an archive here").set_input_files(str(archive))
        page.get_by_label("Label (optional)").fill(f"v{n}")
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#upload-status")).to_have_text(f"Uploaded v{n}.")
        expect(page.locator("#upload-error")).to_be_hidden()
    expect(page.locator("#versions tbody tr")).to_have_count(2, timeout=SLOW)  # the overview reloads itself

    # Deploy v1 to production and v2 to development; each waits for its operation to settle.
    for environment, label in (("production", "v1"), ("development", "v2")):
        page.get_by_label(f"Deploy a version to {environment}").select_option(label=label)
        page.locator(f'[data-environment="{environment}"]').get_by_role("button", name="Deploy").click()
        expect(page.get_by_test_id(f"version-{environment}")).to_have_text(label, timeout=SLOW)
        expect(page.locator(f'[data-environment="{environment}"] .badge.ok')).to_have_text("healthy", timeout=SLOW)
    expect(page.locator("#activity")).to_have_attribute("data-active", "false")
    expect(page.locator("#activity .history")).to_contain_text("v2")
    shot(page, "service")

    # Production shows v1; the preview link opens v2 and its cookie keeps this browser in preview.
    viewer = context.new_page()
    viewer.goto(production_url)
    assert body_of(viewer) == "v1"
    viewer.close()
    with context.expect_page() as opened:
        page.get_by_test_id("open-development").click()
    preview = opened.value
    preview.wait_for_load_state()
    assert body_of(preview) == "v2"
    preview.goto(production_url)
    assert body_of(preview) == "v2", "the preview cookie takes over"
    preview.close()
    assert requests.get(production_url, timeout=10).text == "v1\n"

    # A setting for development, on its own page: redeployed with it (followed under Operations).
    development = page.locator('[data-environment="development"]')
    development.get_by_text("Settings (0)").click()
    development.get_by_role("link", name="Change the settings of development…").click()
    page.get_by_label("Travelling settings").fill("GREETING=hello from development")
    shot(page, "environment-settings")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_test_id("settings-development")).to_contain_text("GREETING=hello from development", timeout=SLOW)
    expect(page.locator("#activity")).to_have_attribute("data-active", "false", timeout=SLOW)
    expect(development.locator(".badge.ok")).to_have_text("healthy", timeout=SLOW)

    # Swap: the confirmation says which version goes where, and the setting that travels with it;
    # then the result offers swap back.
    page.goto(service_page)
    page.get_by_role("link", name="Swap with production…").click()
    plan = page.get_by_role("table", name="What will change")
    expect(plan.get_by_role("row", name="production")).to_have_text(re.compile(r"production\s*v1\s*v2"))
    expect(plan.get_by_role("row", name="development")).to_have_text(re.compile(r"development\s*v2\s*v1"))
    changes = page.get_by_role("table", name="Settings whose values change")
    expect(changes.get_by_role("row", name=re.compile("^production"))).to_have_text(
        re.compile(r"production\s*GREETING\s*not set\s*hello from development\s*travelling")
    )
    expect(page.locator("#swap-starts")).to_have_count(0)  # a travelling setting: a flip alone
    shot(page, "swap-confirm")
    page.get_by_role("button", name="Swap now").click()
    expect(page.get_by_test_id("swap-production")).to_have_text("v2")
    assert requests.get(production_url, timeout=10).text == "v2\n"
    shot(page, "swap-done")

    page.get_by_role("button", name="Swap back").focus()
    page.keyboard.press("Enter")  # the keyboard works as well as the mouse
    expect(page.get_by_test_id("swap-production")).to_have_text("v1")
    expect(page.get_by_test_id("swap-other")).to_have_text("v2")
    assert requests.get(production_url, timeout=10).text == "v1\n"

    page.goto(base + "/")
    expect(page.get_by_role("link", name="web")).to_be_visible()
    shot(page, "dashboard")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()

    # Phone width: the same pages must stay readable.
    phone = context.new_page()
    phone.set_viewport_size(PHONE)
    for name, path in (
        ("dashboard", "/"),
        ("service", service_page),
        ("swap-confirm", service_page + "swap/"),
        ("swap-done", service_page + "swap/done/?environment=development"),
        ("service-create", "/services/new/"),
        ("service-delete", service_page + "delete/"),
    ):
        phone.goto(path if path.startswith("http") else base + path)
        assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], f"{name} scrolls sideways"
        shot(phone, name)
    phone.close()
    anonymous = browser.new_page(viewport=PHONE)
    anonymous.goto(base + "/login/")
    shot(anonymous, "login")
    anonymous.close()

    # Another user neither sees nor reaches the service.
    other, eve = sign_in(browser, base, "eve")
    assert "web" not in eve.get_by_role("main").inner_text()
    assert eve.goto(service_page).status == 404
    assert eve.goto(service_page + "swap/").status == 404
    other.close()

    # Delete, typing the name; the dashboard follows the delete operation until the service is gone.
    page.goto(service_page)
    page.get_by_role("link", name="Delete service…").click()
    page.get_by_label("to confirm").fill("web")
    shot(page, "service-delete")
    page.get_by_role("button", name="Delete this service").click()
    expect(page.get_by_text("You have no services yet")).to_be_visible(timeout=SLOW)
    context.close()


def test_it_keeps_the_console_cookies_from_an_app_opened_in_the_same_browser(control_plane, browser):
    """Browsers share cookies between the ports of one host: the routers strip the console's
    cookies from what reaches an app and refuse them in its Set-Cookie
    (images/conpaas_agent/router/config.py, console_cookie_rules)."""
    from playwright.sync_api import expect

    api = control_plane.client("gus", PASSWORD)
    service = api.create_service("cookies")
    try:
        version = api.upload(service["id"], cookie_echo_app(), "echo").json()
        assert api.deploy(service["id"], "production", version["id"])["state"] == "succeeded"
        production_url = api.get(f"/api/v1/services/{service['id']}/").json()["url"]

        context, console = sign_in(browser, control_plane.url, "gus")
        signed_in = {c["name"]: c["value"] for c in context.cookies(control_plane.url)}
        assert set(signed_in) == {"conpaas_console_session", "conpaas_console_csrf"}
        # The worst case: the app on the console's host (browsers scope cookies by host, not port),
        # as on a machine whose nodes share its address. Isolated nodes have addresses of their
        # own, so the browser's requests to a port of the console's host go to the router as sent,
        # cookies included, and its answers come back, Set-Cookie included.
        app_url = f"http://127.0.0.1:{free_port()}/"

        def to_router(route):
            target = production_url.rstrip("/") + urlsplit(route.request.url).path
            route.fulfill(response=route.fetch(url=target, headers=route.request.all_headers()))

        if urlsplit(production_url).hostname != "127.0.0.1":
            context.route(app_url + "**", to_router)
        else:
            app_url = production_url
        # Else this test proves nothing: the browser would not offer the app the console's cookies.
        offered = {c["name"] for c in context.cookies(app_url)}
        assert offered == set(signed_in), f"{app_url} is not on the console's host"

        app = context.new_page()
        app.goto(app_url)
        first = body_of(app)
        app.reload()  # now with the cookie the app set itself
        second = body_of(app)
        app.close()
        assert first.startswith("cookie:") and "conpaas_console_" not in first, first
        assert second == "cookie: sessionid=from-the-app", "the app sees its own cookie, and only it"

        after = {c["name"]: c["value"] for c in context.cookies(control_plane.url)}
        assert after["sessionid"] == "from-the-app"
        assert {name: after[name] for name in signed_in} == signed_in, "the app replaced a console cookie"
        console.goto(control_plane.url + "/")
        expect(console.get_by_role("heading", name="Your services")).to_be_visible()
        expect(console.get_by_role("link", name="cookies")).to_be_visible()
        context.close()
    finally:
        api.wait_operation(api.delete(f"/api/v1/services/{service['id']}/").json())
