"""The account pages in Chromium: a wrong password, changing one's password, the admin's list."""

import pytest

from tests.browser.conftest import SHOTS, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_wrong_password_then_change_password(hub, page, make_user):
    user = make_user()
    sign_in(page, hub, user.email, "not my password", wait=False)
    assert page.locator(".login_error").inner_text().strip() == "Invalid username or password"
    page.screenshot(path=str(SHOTS / "login-error.png"), full_page=True)

    sign_in(page, hub, user.email, user.password)
    page.click("#user-menu")
    page.click("text=Change password")
    page.wait_for_url("**/hub/change-password")
    page.fill("input[name=current_password]", user.password)
    page.fill("input[name=password]", "a-new-secret-77")
    page.fill("input[name=password_confirm]", "a-new-secret-78")
    page.click("button[type=submit]")
    page.locator(".alert.alert-danger").wait_for()
    assert "The two passwords do not match." in page.locator(".alert.alert-danger").inner_text()
    page.screenshot(path=str(SHOTS / "change-password-error.png"), full_page=True)
    page.fill("input[name=current_password]", user.password)
    page.fill("input[name=password]", "a-new-secret-77")
    page.fill("input[name=password_confirm]", "a-new-secret-77")
    page.click("button[type=submit]")
    page.locator(".alert-success").wait_for()
    assert page.locator(".alert-success").inner_text().strip() == "Your password was changed."
    page.screenshot(path=str(SHOTS / "change-password-done.png"), full_page=True)


def test_admin_sees_accounts(hub, page, make_user):
    make_user()
    password = (hub.data_dir / "initial-admin-password").read_text().strip()
    sign_in(page, hub, "admin@labdeck.local", password)
    page.click("#user-menu")
    page.click(".dropdown-menu >> text=Accounts")
    page.wait_for_url("**/hub/accounts")
    rows = page.locator("#accounts-table tbody tr")
    assert rows.count() >= 2
    assert page.locator("#accounts-table", has_text="admin@labdeck.local").count() == 1
    page.screenshot(path=str(SHOTS / "accounts-admin.png"), full_page=True)
