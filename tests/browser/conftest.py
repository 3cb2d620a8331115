"""Chromium for the browser tests (Debian's, driven by Playwright), and the steps they share.

Screenshots go to tests/.artifacts/screenshots/ (git-ignored) for people to look at.
"""

from pathlib import Path

import pytest

SHOTS = Path(__file__).resolve().parent.parent / ".artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: ./labdeck test installs Debian's chromium package")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


def sign_in(page, hub, login: str, password: str, wait: bool = True) -> None:
    """Through the hub's sign-in form, like a person."""
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", login)
    page.fill("input[name=password]", password)
    page.click("#login_submit")
    if wait:
        page.wait_for_url("**/hub/**")
