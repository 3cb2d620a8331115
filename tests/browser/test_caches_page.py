"""High-speed cache in Chromium: create a task, watch its progress bar move (no reload),
share it, delete it through the dialog. Screenshots for people to look at."""

import os
import secrets
from pathlib import Path

import pytest

from tests.browser.conftest import SHOTS, sign_in
from tests.hubtools import SERVICE, ServiceClient

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_caches_page(hub, page, make_user):
    user = make_user()
    storage = Path(hub.platform.paths.user_storage(user.name))
    (storage / "imagenet-mini").mkdir()
    for i in range(100):  # 100 MiB in 100 files: about four seconds at the test's 25 MiB/s
        (storage / "imagenet-mini" / f"shard{i:03d}.tar").write_bytes(os.urandom(2**20))
    sign_in(page, hub, user.email, user.password)

    page.goto(f"{hub.url}{SERVICE}caches/new")
    page.fill("#name", "imagenet mini")
    page.fill("#source", "~/imagenet-mini")
    page.fill("#description", "a hundred shards for quick experiments")
    page.screenshot(path=str(SHOTS / "caches-new.png"), full_page=True)
    page.click("#create-cache")
    page.wait_for_url("**/services/labdeck/caches")
    page.evaluate("window.__same_page = true")
    bar = page.locator("#private-caches .progress-bar").first
    widths = set()
    for _ in range(60):
        widths.add(bar.evaluate("el => el.style.width"))
        if page.locator("#private-caches .cache-state", has_text="ready").count():
            break
        if len(widths) == 3:
            page.screenshot(path=str(SHOTS / "caches-copying.png"), full_page=True)
        page.wait_for_timeout(250)
    page.locator("#private-caches .cache-state", has_text="ready").wait_for(timeout=60_000)
    assert page.evaluate("window.__same_page") is True  # it moved without a reload
    assert len(widths) >= 3 and "100%" in bar.evaluate("el => el.style.width")
    page.screenshot(path=str(SHOTS / "caches-ready.png"), full_page=True)

    page.locator("#private-caches .cache-link").first.click()
    page.click("#share-cache")
    department = f"vision-{secrets.token_hex(3)}"  # unique: other tests read department lists
    page.fill("#member-name", department)
    page.select_option("#member-kind", "group")
    page.click("#add-member-button")
    page.locator("#members", has_text=department).wait_for(timeout=10_000)
    page.screenshot(path=str(SHOTS / "caches-settings.png"), full_page=True)

    page.click("#delete-cache")
    page.locator("#delete-dialog.show").wait_for(state="visible")
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / "caches-delete-dialog.png"))
    page.click("#delete-confirm")
    page.wait_for_url("**/services/labdeck/caches")
    assert "Deleted cache" in page.locator("#flash").inner_text()
    assert ServiceClient(hub, user.name)("GET", "/caches").json() == {"private": [], "shared": [], "department": []}
