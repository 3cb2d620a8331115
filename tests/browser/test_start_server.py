"""A person in Chromium: sign up, sign in with e-mail, fill "Start my Server", get JupyterLab."""

import re
import secrets

import pytest

from tests.browser.conftest import SHOTS
from tests.hubtools import containers_of

pytestmark = [pytest.mark.integration, pytest.mark.browser]

def test_sign_up_fill_form_and_open_jupyterlab(hub, page, notebook_image, shared_root):
    name = f"web{secrets.token_hex(3)}"
    email = f"{name}@example.org"
    password = "tulip-river-42"

    page.goto(f"{hub.url}/hub/signup")
    page.fill("input[name=username]", name)
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.fill("input[name=password_confirm]", password)
    page.screenshot(path=str(SHOTS / "signup.png"), full_page=True)
    page.click("button[type=submit]")
    page.wait_for_url("**/hub/login**")

    page.fill("input[name=username]", email)  # the sign-in screen asks for e-mail and password
    page.fill("input[name=password]", password)
    page.screenshot(path=str(SHOTS / "login.png"), full_page=True)
    page.click("#login_submit")
    page.wait_for_url("**/hub/spawn**")

    # the "Start my Server" form
    assert page.locator("h1", has_text="Start my Server").is_visible()
    page.select_option("#region", "default")
    page.fill("#cpu", "1")
    page.fill("#memory_gb", "1")
    page.fill("#gpus", "1")
    page.select_option("#gpu_model", "A100")
    page.click("#add-mount")
    rows = page.locator("#mounts tbody tr")
    assert rows.count() == 2
    rows.nth(1).locator("input[name=mount_host]").fill(f"{shared_root}/mnist")
    rows.nth(1).locator("input[name=mount_container]").fill("/data/mnist")
    rows.nth(1).locator("select[name=mount_mode]").select_option("ro")
    # a row can be removed again
    page.click("#add-mount")
    assert rows.count() == 3
    rows.nth(2).locator(".remove-mount").click()
    assert rows.count() == 2
    page.screenshot(path=str(SHOTS / "start-my-server-form.png"), full_page=True)

    page.click("#spawn_form button[type=submit]")
    try:
        _open_jupyterlab_after_the_form(page, name)
    finally:
        hub.stop_server(name)  # its GPU goes back even when this test fails


def _open_jupyterlab_after_the_form(page, name):
    # the progress page, unless the server was up before it loaded (it then goes on at once)
    page.wait_for_url(re.compile(rf".*/(spawn-pending/|user/{name}/lab).*"), timeout=60_000)
    try:
        page.click("#progress-details summary", timeout=5_000)
        page.wait_for_function("document.querySelector('#progress-log').textContent.includes('Reserved')",
                               timeout=10_000)
        page.screenshot(path=str(SHOTS / "spawn-progress.png"), full_page=True)
    except Exception:
        pass  # already redirected to JupyterLab: the start was faster than the screenshot

    page.wait_for_url(f"**/user/{name}/lab**", timeout=180_000)
    page.wait_for_selector(".jp-LabShell, #jp-main-dock-panel", timeout=120_000)
    page.wait_for_timeout(1500)  # let the launcher finish painting for the screenshot
    page.screenshot(path=str(SHOTS / "jupyterlab.png"))
    assert "JupyterLab" in page.title() or page.locator(".jp-LabShell").count() == 1

    (c,) = [c for c in containers_of(name) if c.status == "running"]
    assert {m["Destination"]: m["RW"] for m in c.attrs["Mounts"]} == {"/home/jovyan/work": True, "/data/mnist": False}
    assert c.labels["labdeck.gpu_model"] == "A100"


def test_a_queued_start_shows_its_place_in_line(hub, page, make_user, notebook_image):
    """Host east-1 lets one server start at a time (TEST_CONFIG). While two other people's
    servers start there, a third person's progress page says they wait and how many are ahead."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.browser.conftest import sign_in
    from tests.hubtools import wait_for

    others, me = [make_user(), make_user()], make_user()
    sign_in(page, hub, me.name, me.password)
    page.goto(f"{hub.url}/hub/spawn")
    page.select_option("#region", "east")
    page.fill("#cpu", "1")
    page.fill("#memory_gb", "1")
    page.fill("#gpus", "0")
    options = {"image": "labdeck/notebook:latest", "region": "east", "cpu": 1, "memory_gb": 1, "gpus": 0}
    with ThreadPoolExecutor(2) as pool:
        starts = [pool.submit(hub.api, "POST", f"/users/{u.name}/server", json=options) for u in others]
        wait_for(lambda: all(hub.api("GET", f"/users/{u.name}").json().get("pending") == "spawn" for u in others),
                 30, "the other two starts to begin", interval=0.05)
        try:
            page.click("#spawn_form button[type=submit]")
            page.wait_for_url("**/spawn-pending/**")
            # read the log in the same moment it shows the wait: once the server is up, the page
            # reloads (a fresh, empty log) on its way to JupyterLab
            log = page.wait_for_function(
                """() => {
                    const details = document.querySelector('#progress-details');
                    const text = document.querySelector('#progress-log').textContent;
                    if (!text.includes('Waiting for a start slot on host east-1')) return null;
                    details.open = true;
                    return text;
                }""", timeout=30_000).json_value()
            page.screenshot(path=str(SHOTS / "spawn-queued.png"), full_page=True)
            assert re.search(r"Waiting for a start slot on host east-1: [12] servers? starting ahead of yours", log), log
            page.wait_for_url(f"**/user/{me.name}/lab**", timeout=180_000)
        finally:
            assert all(f.result().status_code in (201, 202) for f in starts)
            for u in (*others, me):
                if hub.server_model(u.name):
                    hub.stop_server(u.name)
