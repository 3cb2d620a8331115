"""Remote debug in Chromium: create a session, see its SSH command, open it, save a snapshot
through the confirmation dialog, terminate and delete it. Screenshots for people to look at."""

import pytest

from tests.browser.conftest import SHOTS, sign_in
from tests.hubtools import SERVICE, ServiceClient

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_remote_debug_page(hub, page, make_user, debug_image):
    user = make_user()
    sign_in(page, hub, user.email, user.password)

    page.goto(f"{hub.url}{SERVICE}debug")
    assert page.locator(".navbar .nav-link.active").inner_text() == "Remote debug"
    page.screenshot(path=str(SHOTS / "debug-empty.png"), full_page=True)
    page.click("#new-session")
    page.wait_for_url("**/debug/new")
    page.fill("#name", "vision model")
    page.fill("#ports", "3")
    page.fill("#password", "browser-pass-9")
    page.fill("#cpu", "0.5")
    page.fill("#memory_gb", "0.5")
    page.fill("#gpus", "0")
    page.screenshot(path=str(SHOTS / "debug-new.png"), full_page=True)
    page.click("#create-session")
    page.wait_for_url("**/services/labdeck/debug")
    assert "is starting" in page.locator("#flash").inner_text()

    row = page.locator("#running-sessions tbody tr").first
    row.locator(".badge", has_text="running").wait_for(timeout=90_000)  # the page follows the start
    (session,) = ServiceClient(hub, user.name)("GET", "/debug").json()["sessions"]
    assert row.locator(".ssh-command").inner_text() == session["ssh_command"]
    assert row.locator(".port-range").inner_text() == session["port_range"]
    page.screenshot(path=str(SHOTS / "debug-running.png"), full_page=True)

    with page.expect_popup() as popup:
        row.locator(".open-link").click()
    lab = popup.value
    lab.wait_for_selector(".jp-LabShell", timeout=120_000)
    lab.wait_for_timeout(1000)
    lab.screenshot(path=str(SHOTS / "debug-open-jupyterlab.png"))
    lab.close()

    row.locator(".snapshot-button").click()
    dialog = page.locator("#snapshot-dialog.show")
    dialog.wait_for(state="visible")
    page.wait_for_timeout(400)  # let the dialog finish fading in before the screenshot
    assert dialog.locator("#snapshot-name").input_value() == "vision-model"
    page.screenshot(path=str(SHOTS / "debug-snapshot-dialog.png"))
    dialog.locator("#snapshot-save").click()
    page.wait_for_url("**/services/labdeck/debug")
    assert "Saving snapshot vision-model:latest" in page.locator("#flash").inner_text()
    page.locator("#snapshots .badge", has_text="saved").wait_for(timeout=120_000)
    page.screenshot(path=str(SHOTS / "debug-snapshot-saved.png"), full_page=True)

    page.locator("#running-sessions .terminate-button").first.click()
    page.locator("#terminate-dialog").wait_for(state="visible")
    page.locator("#terminate-confirm").click()
    page.wait_for_url("**/services/labdeck/debug")
    ended = page.locator("#ended-sessions tbody tr").first
    assert ended.locator(".end-status").inner_text() == "terminated by user"
    ended.locator(".select-item").check()
    page.locator("#delete-selected").click()
    page.locator("#delete-dialog.show").wait_for(state="visible")
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / "debug-delete-dialog.png"))
    page.locator("#delete-confirm").click()
    page.wait_for_url("**/services/labdeck/debug")
    assert page.locator("#ended-sessions", has_text=session["id"]).count() == 0
