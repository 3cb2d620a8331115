"""Training / evaluation in Chromium: submit a job, watch its log grow, open its results,
batch-delete ended jobs. Screenshots for people to look at."""

import pytest

from tests.browser.conftest import SHOTS, sign_in
from tests.hubtools import SERVICE, ServiceClient, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_jobs_page(hub, page, make_user, notebook_image):
    user = make_user()
    api = ServiceClient(hub, user.name)
    sign_in(page, hub, user.email, user.password)

    page.goto(f"{hub.url}{SERVICE}jobs/new")
    page.fill("#name", "count to twelve")
    page.fill("#command", "for i in $(seq 1 12); do echo step $i; sleep 0.5; done; echo 12 > /output/result.txt")
    page.fill("#time_limit_min", "5")
    page.fill("#cpu", "0.5")
    page.fill("#memory_gb", "0.5")
    page.fill("#gpus", "0")
    page.screenshot(path=str(SHOTS / "jobs-new.png"), full_page=True)
    page.click("#submit-job")
    page.wait_for_url("**/services/labdeck/jobs")
    assert "submitted" in page.locator("#flash").inner_text()
    page.screenshot(path=str(SHOTS / "jobs-running.png"), full_page=True)

    page.locator("#running-jobs .view-log").first.click()
    page.wait_for_url("**/log")
    page.evaluate("window.__same_page = true")
    page.locator("#log", has_text="step 3").wait_for(timeout=60_000)
    page.locator("#log", has_text="step 12").wait_for(timeout=60_000)  # new lines, no reload
    assert page.evaluate("window.__same_page") is True
    page.screenshot(path=str(SHOTS / "jobs-log.png"), full_page=True)

    (job,) = api("GET", "/jobs").json()["jobs"]
    wait_for(lambda: api("GET", f"/jobs/{job['id']}").json()["state"] == "ended", 60, "the job to end")
    quick = api("POST", "/jobs", json={"name": "quick one", "image": "labdeck/notebook:latest", "region": "default",
                                       "cpu": 0.5, "memory_gb": 0.5, "command": "echo quick"}).json()
    wait_for(lambda: api("GET", f"/jobs/{quick['id']}").json()["state"] == "ended", 60, "the second job to end")

    page.goto(f"{hub.url}{SERVICE}jobs")
    row = page.locator(f"#ended-jobs tr[data-job='{job['id']}']")
    assert row.locator(".end-status").inner_text().strip() == "succeeded"
    row.locator(".results-link").click()
    page.wait_for_url("**/files/**")
    assert page.locator("#files", has_text="result.txt").count() == 1
    page.screenshot(path=str(SHOTS / "jobs-results.png"), full_page=True)
    page.locator("#files a", has_text="result.txt").first.click()
    page.locator("#preview", has_text="12").wait_for()
    page.screenshot(path=str(SHOTS / "jobs-result-preview.png"), full_page=True)

    page.goto(f"{hub.url}{SERVICE}jobs")
    page.locator("#select-all").check()
    page.locator("#delete-selected").click()
    page.locator("#delete-dialog.show").wait_for(state="visible")
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / "jobs-delete-dialog.png"))
    page.locator("#delete-confirm").click()
    page.wait_for_url("**/services/labdeck/jobs")
    assert "Deleted 2 jobs" in page.locator("#flash").inner_text()
    assert api("GET", "/jobs").json() == {"jobs": []}
    page.screenshot(path=str(SHOTS / "jobs-after-delete.png"), full_page=True)
