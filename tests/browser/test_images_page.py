"""Private repository in Chromium: the two lists, the share dialog (add a user, see them listed),
rename to the other kind, delete through the confirmation dialog; and the image picker of the
user it was shared with. Screenshots for people to look at."""

import pytest

from tests.browser.conftest import SHOTS, sign_in
from tests.handlers.test_debug import create, terminate, wait_running
from tests.handlers.test_repository import save_snapshot
from tests.hubtools import SERVICE, ServiceClient

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_private_repository_page(hub, page, make_user, debug_image):
    owner, colleague = make_user(), make_user()
    api = ServiceClient(hub, owner.name)
    session = wait_running(api, create(api, name="segmentation")["id"])
    image = save_snapshot(api, session["id"], "segmentation-env")
    terminate(api, session["id"])

    sign_in(page, hub, owner.email, owner.password)
    page.goto(f"{hub.url}{SERVICE}images")
    assert page.locator(".navbar .nav-link.active").inner_text() == "Private repository"
    row = page.locator(f"#debug-images tr[data-item='{image['id']}']")
    assert "segmentation-env:v1" in row.inner_text() and "snapshot of segmentation" in row.inner_text()
    assert "only you" in row.inner_text()

    row.locator(".share-image").click()
    dialog = page.locator(f"#share-{image['id']}")
    dialog.wait_for(state="visible")
    dialog.locator(".member-name").fill(colleague.name)
    dialog.locator(".add-member-button").click()
    # the page comes back with the dialog open and the colleague listed
    page.locator(f"#share-{image['id']}.show tr[data-member='user:{colleague.name}']").wait_for()
    assert f"Shared with user {colleague.name}" in page.locator("#flash").inner_text()
    page.wait_for_timeout(400)  # the dialog's fade-in
    page.screenshot(path=str(SHOTS / "images-share-dialog.png"))
    dialog.locator(".btn-close").click()
    dialog.wait_for(state="hidden")
    page.wait_for_timeout(400)  # the backdrop's fade-out
    assert colleague.name in page.locator(f"#debug-images tr[data-item='{image['id']}'] .member-badge").inner_text()
    page.screenshot(path=str(SHOTS / "images.png"), full_page=True)

    row.locator(".rename-image").click()
    rename = page.locator(f"#rename-{image['id']}")
    rename.wait_for(state="visible")
    rename.locator(".rename-tag").fill("v2")
    rename.locator(".rename-kind").select_option("job")
    rename.locator(".rename-confirm").click()
    page.wait_for_url("**/services/labdeck/images")
    assert "Image is now segmentation-env:v2 (training / evaluation)" in page.locator("#flash").inner_text()
    assert "segmentation-env:v2" in page.locator("#job-images").inner_text()
    assert "segmentation-env" not in page.locator("#debug-images").inner_text()

    # the colleague's "Start my Server" picker offers it under "Shared with me"
    other = page.context.browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(other, hub, colleague.email, colleague.password)
    other.goto(f"{hub.url}/hub/spawn")
    group = other.locator("#image optgroup[label='Shared with me'] option")
    assert group.count() == 1 and "segmentation-env:v2" in group.inner_text()
    assert owner.name in group.inner_text()
    other.select_option("#image", group.get_attribute("value"))
    assert "snapshot of segmentation" in other.locator("#image-description").inner_text()
    other.screenshot(path=str(SHOTS / "images-shared-picker.png"), full_page=True)
    other.context.close()

    page.locator(f"#job-images tr[data-item='{image['id']}'] .delete-image").click()
    page.locator("#delete-dialog.show").wait_for(state="visible")
    page.wait_for_timeout(400)
    page.screenshot(path=str(SHOTS / "images-delete-dialog.png"))
    page.click("#delete-confirm")
    page.wait_for_url("**/services/labdeck/images")
    assert "Deleted image segmentation-env:v2" in page.locator("#flash").inner_text()
    assert api("GET", "/images").json()["images"] == []
