"""The README's first command: ./labdeck start brings the platform up, and the first admin
can sign in with what it prints."""

import os
import re
import signal
import subprocess
import time

import docker
import pytest
import requests

from spawner.bind_mounts import unmount_all_under
from tests.hubtools import REPO, free_port, login_session

pytestmark = pytest.mark.integration


def start_platform(env):
    proc = subprocess.Popen([str(REPO / "labdeck"), "start"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines, password = [], None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"labdeck:\s+password (\S+) ", line)
        if found:
            password = found.group(1)
        if password:
            break
    url = env["LABDECK_URL"]
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/hub/login", timeout=2).status_code == 200:
                return proc, password, lines
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop(proc)
    raise AssertionError("./labdeck start did not answer:\n" + "".join(lines) + (proc.stdout.read() or ""))


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_start_prints_how_the_first_admin_signs_in_and_is_idempotent(tmp_path):
    port = free_port()
    env = dict(os.environ,
               LABDECK_DATA_DIR=str(tmp_path / "data"),
               LABDECK_URL=f"http://127.0.0.1:{port}",
               LABDECK_HUB_PORT=str(free_port()), LABDECK_SERVICE_PORT=str(free_port()),
               LABDECK_PROXY_API_URL=f"http://127.0.0.1:{free_port()}")
    env.pop("LABDECK_EXTRA_CONFIG", None)

    proc, password, lines = start_platform(env)
    try:
        text = "".join(lines)
        assert f"starting labdeck at http://127.0.0.1:{port}" in text
        assert "user name admin (e-mail admin@labdeck.local)" in text
        assert password and password == (tmp_path / "data" / "initial-admin-password").read_text().strip()
        assert oct((tmp_path / "data" / "initial-admin-password").stat().st_mode & 0o777) == "0o600"
        hub = type("Hub", (), {"url": env["LABDECK_URL"]})
        s = login_session(hub, "admin@labdeck.local", password)
        assert s.get(f"{hub.url}/hub/admin", timeout=30).status_code == 200
    finally:
        stop(proc)

    # a second start changes nothing and says so
    proc, again, lines = start_platform(env)
    try:
        assert again == password
        assert "up to date" in "".join(lines)
        assert not any("installing" in line or "built in" in line for line in lines)
    finally:
        stop(proc)
        left = warm_servers_of(tmp_path)
        unmount_all_under(str(tmp_path))  # the warm pool's shared folder
    assert not left, f"warm servers still running after the platform stopped: {left}"


def warm_servers_of(tmp_path) -> list[str]:
    """Warm servers of the platform whose data folder is ``tmp_path`` (removed after the check,
    whatever it says: their instance label, "labdeck", is the real platform's too)."""
    client = docker.from_env()
    found = [c for c in client.containers.list(all=True, filters={"label": "labdeck.pool=standby"})
             if any(m["Source"].startswith(str(tmp_path)) for m in c.attrs["Mounts"])]
    for c in found:
        c.remove(force=True)
    return [c.name for c in found]
