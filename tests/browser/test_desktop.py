"""A person's Linux desktop in Chromium: a notebook server on the desktop image, its XFCE desktop
at <server>/desktop/ (noVNC through the server's proxy), and an OpenGL program compiled in the
container and seen on that desktop."""

import re
import time

import pytest

from tests.browser.conftest import SHOTS, sign_in
from tests.hubtools import containers_of, wait_for
from tests.test_environment_images import GL_TITLE, gl_build_script

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DESKTOP = "labdeck/desktop:latest"
JOVYAN = "1000:100"

# Samples the noVNC canvas (its size is the VNC framebuffer's: no scaling): the number of distinct
# colours on a grid, or the colour at given points.
CANVAS_COLOURS = """(step) => {
    const c = document.querySelector('#screen canvas');
    if (!c || !c.width) return 0;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let y = 0; y < c.height; y += step)
        for (let x = 0; x < c.width; x += step) {
            const i = (y * c.width + x) * 4;
            seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        }
    return seen.size;
}"""
CANVAS_PIXELS = """(points) => {
    const ctx = document.querySelector('#screen canvas').getContext('2d');
    return points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)));
}"""


@pytest.fixture(scope="module")
def desktop_image(docker_client, built_images):
    return docker_client.images.get(DESKTOP)


def run_as_jovyan(container, command, display=None, **kwargs):
    environment = {"DISPLAY": display} if display else {}
    return container.exec_run(command, user=JOVYAN, environment=environment, **kwargs)


def dominant(rgb) -> str:
    """Which of red, green and blue clearly leads in a colour ('' if none)."""
    names = ("red", "green", "blue")
    order = sorted(range(3), key=lambda i: rgb[i], reverse=True)
    return names[order[0]] if rgb[order[0]] > rgb[order[1]] + 60 else ""


def test_desktop_in_the_browser_runs_an_opengl_program(hub, make_user, page, desktop_image):
    user = make_user()
    r = hub.api("POST", f"/users/{user.name}/server", json={
        "image": DESKTOP, "region": "default", "cpu": 1, "memory_gb": 2, "gpus": 0})
    assert r.status_code in (201, 202), r.text
    try:
        hub.wait_for_server(user.name, timeout=180)
        (container,) = [c for c in containers_of(user.name) if c.status == "running"]

        # the desktop, as a person opens it: signed in to the hub, then <server>/desktop/
        sign_in(page, hub, user.email, user.password, wait=False)
        page.wait_for_load_state()
        page.goto(f"{hub.url}/user/{user.name}/desktop/")
        page.wait_for_url(f"**/user/{user.name}/desktop/", timeout=60_000)
        page.wait_for_function("document.querySelector('#status').textContent.trim() === 'Connected'",
                               timeout=90_000)
        # XFCE takes a few seconds to paint its panel and desktop; until then the screen is blank
        wait_for(lambda: page.evaluate(CANVAS_COLOURS, 8) >= 20, 90, "the desktop to be painted", 1)
        time.sleep(3)  # let the panel finish (the screenshot is for people)
        page.screenshot(path=str(SHOTS / "desktop.png"))
        assert page.evaluate(CANVAS_COLOURS, 8) >= 20  # not a blank screen: backdrop, panel, icons

        # which X display jupyter-remote-desktop-proxy's vncserver took (the first free one: :1)
        code, out = container.exec_run(["pgrep", "-a", "-x", "Xtigervnc"])
        assert code == 0, out
        display = re.search(r" (:\d+) ", out.decode()).group(1)
        assert display == ":1"

        # compile a GL program in the container and start it on that display
        code, out = run_as_jovyan(container, ["bash", "-c", gl_build_script("/tmp/gl")])
        assert code == 0, out.decode()
        run_as_jovyan(container, ["/tmp/gl/triangle"], display, detach=True)
        code, out = run_as_jovyan(container, ["timeout", "60", "xdotool", "search", "--sync", "--name",
                                              f"^{GL_TITLE}$"], display)
        assert code == 0, out.decode()
        window = out.decode().split()[0]
        code, out = run_as_jovyan(container, ["xwininfo", "-id", window], display)
        info = dict(re.findall(r"^\s+(Absolute upper-left [XY]|Width|Height):\s+(-?\d+)", out.decode(), re.M))
        x, y = int(info["Absolute upper-left X"]), int(info["Absolute upper-left Y"])
        width, height = int(info["Width"]), int(info["Height"])

        # inside the triangle, near its red, green and blue corners (GL coordinates -> window pixels)
        def at(gx, gy):
            return [round(x + (gx + 1) / 2 * width), round(y + (1 - gy) / 2 * height)]

        points = [at(-0.7, -0.8), at(0.7, -0.8), at(0.0, 0.6)]
        wait_for(lambda: [dominant(p) for p in page.evaluate(CANVAS_PIXELS, points)] == ["red", "green", "blue"],
                 60, "the triangle to show on the desktop", 0.5)
        page.screenshot(path=str(SHOTS / "desktop-opengl.png"))
        code, out = container.exec_run(["pgrep", "-u", "jovyan", "-x", "triangle"])
        assert code == 0, "the GL program is not running"
    finally:
        hub.stop_server(user.name)
    assert containers_of(user.name) == []
