"""Administration in Chromium: an admin adds a host through the form, refreshes, queries who runs
what on a host, and submits a maintenance notice; the affected user sees the banner.
Screenshots for people to look at."""

from datetime import timedelta

import pytest

from services.models import utcnow
from tests.browser.conftest import SHOTS, sign_in
from tests.handlers.test_debug import create, terminate, wait_running
from tests.hubtools import SERVICE, ServiceClient

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_hosts_and_maintenance_notice(hub, page, browser, make_user, second_engine, debug_image):
    admin, user = make_user(admin=True), make_user()
    api = ServiceClient(hub, user.name)
    session = wait_running(api, create(api, name="long training")["id"])

    sign_in(page, hub, admin.email, admin.password)
    page.goto(f"{hub.url}{SERVICE}admin/hosts")
    assert page.locator("#hosts tr[data-host='local'] .host-state").inner_text() == "online"
    page.fill("#host-name", "lab-b")
    page.fill("#host-region", "lab")
    page.fill("#host-docker-url", "unix:///tmp/nothing-here.sock")
    page.click("#add-host-button")
    assert "does not answer as a Docker engine: no such file or directory" in page.locator("#host-error").inner_text()
    assert page.locator("#host-name").input_value() == "lab-b"  # the form keeps what was typed
    page.fill("#host-docker-url", second_engine.url)
    page.fill("#host-gpus", "A100: 2")
    page.click("#add-host-button")
    page.wait_for_url("**/admin/hosts")
    assert "Added host lab-b" in page.locator("#flash").inner_text()
    row = page.locator("#hosts tr[data-host='lab-b']")
    assert "A100: 0 / 2" in row.inner_text() and row.locator(".host-state").inner_text() == "online"
    page.click("#refresh-hosts")
    page.wait_for_url("**/admin/hosts")
    assert "all answer" in page.locator("#flash").inner_text()
    page.screenshot(path=str(SHOTS / "admin-hosts.png"), full_page=True)

    page.goto(f"{hub.url}{SERVICE}admin/notify")
    page.fill("#query-host", "local")
    page.click("#query-button")
    table = page.locator("#host-workloads")
    assert session["id"] in table.inner_text() and user.email in table.inner_text()
    starts, ends = utcnow() + timedelta(days=1), utcnow() + timedelta(days=1, hours=2)
    page.fill("#starts-at", starts.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#ends-at", ends.strftime("%Y-%m-%dT%H:%M"))
    page.fill("#message", "Kernel upgrade on local; save your work before it starts.")
    page.screenshot(path=str(SHOTS / "admin-notify.png"), full_page=True)
    page.click("#notify-button")
    page.wait_for_url("**/admin/notify?host=local")
    assert "Maintenance scheduled on local" in page.locator("#flash").inner_text()
    assert "Kernel upgrade on local" in page.locator("#windows").inner_text()

    other = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    try:
        sign_in(other, hub, user.email, user.password)
        other.goto(f"{hub.url}/hub/home")
        assert "Kernel upgrade on local" in other.locator("body").inner_text()
        other.screenshot(path=str(SHOTS / "maintenance-banner-hub.png"))
        other.goto(f"{hub.url}{SERVICE}debug")
        assert "Kernel upgrade on local" in other.locator("body").inner_text()
        other.screenshot(path=str(SHOTS / "maintenance-banner-service.png"))
    finally:
        other.context.close()
        page.locator(".cancel-window").first.click()
        page.wait_for_url("**/admin/notify")
        terminate(api, session["id"])
        admin_api = ServiceClient(hub, admin.name)
        assert admin_api("DELETE", "/admin/hosts/lab-b").status_code == 204
