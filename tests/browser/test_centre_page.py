"""The personal centre in Chromium: a maintenance banner on the hub's and the service's pages,
dismissed from the banner; the centre's running workloads and usage; mark all read.
Screenshots for people to look at."""

from datetime import timedelta

import pytest

from services.models import utcnow
from services.notifications import notify
from tests.browser.conftest import SHOTS, sign_in
from tests.handlers.test_jobs import submit
from tests.hubtools import SERVICE, ServiceClient, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_centre_page_banner_and_notifications(hub, page, make_user, notebook_image):
    user = make_user(groups=("vision-lab",))
    api = ServiceClient(hub, user.name)
    job = submit(api, "sleep 300", name="resnet50 baseline", cpu=1, memory_gb=2)
    wait_for(lambda: api("GET", f"/jobs/{job['id']}").json()["state"] == "running", 90, "the job to run")
    with hub.platform.db.session() as s:
        notify(s, user.name, "Welcome to labdeck", "Your account is ready. Start a notebook from Online experiment.")
        notify(s, user.name, "Cache ready", "Your cache imagenet-mini is ready in region default.")
        banner = notify(s, user.name, "Maintenance of host local",
                        "The host local restarts for a kernel update. Save your work before the window starts.",
                        banner=True, expires_at=utcnow() + timedelta(hours=3))
        s.flush()
        banner_id = banner.id
    try:
        sign_in(page, hub, user.email, user.password)
        page.goto(f"{hub.url}/hub/home")
        hub_banner = page.locator(f'.labdeck-banner[data-notification="{banner_id}"]')
        hub_banner.wait_for()
        assert "Maintenance of host local" in hub_banner.inner_text()
        assert hub_banner.locator(".dismiss-in-centre").get_attribute("href") == f"{SERVICE}centre#notifications"
        page.screenshot(path=str(SHOTS / "banner-hub.png"))

        hub_banner.locator(".dismiss-in-centre").click()
        page.wait_for_url("**/services/labdeck/centre*")
        assert page.locator(".navbar .nav-link.active").inner_text() == "Personal centre"
        row = page.locator(f'#workloads tr[data-item="{job["id"]}"]')
        assert "resnet50 baseline" in row.inner_text()
        assert row.locator(".workload-host").inner_text() == "local"
        assert row.locator(".workload-region").inner_text() == "default"
        assert page.locator("#profile-email").inner_text() == user.email
        assert page.locator("#profile-departments").inner_text().strip() == "vision-lab"
        assert page.locator("#unread-count").inner_text() == "3 unread"
        assert page.locator(".labdeck-banner .dismiss-banner").count() == 1
        assert page.locator("#quota-cpu .usage-used").inner_text() == "1"
        page.screenshot(path=str(SHOTS / "centre.png"), full_page=True)

        page.click(".labdeck-banner .dismiss-banner")
        page.locator("#flash").wait_for()
        assert page.locator(".labdeck-banner").count() == 0
        assert page.locator("#unread-count").inner_text() == "2 unread"
        assert "read" in page.locator(f'.notification[data-notification="{banner_id}"]').get_attribute("class").split()

        page.click("#mark-all-read")
        page.locator("#flash", has_text="Marked 2 notifications as read.").wait_for()
        assert page.locator("#unread-count").count() == 0 and page.locator(".notification.unread").count() == 0
        assert page.locator(".notification.read").count() == 3
        page.goto(f"{hub.url}/hub/home")
        assert page.locator(".labdeck-banner").count() == 0
    finally:
        api("POST", f"/jobs/{job['id']}/terminate")
