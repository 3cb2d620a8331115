"""A real JupyterHub (with configurable-http-proxy) for the tests, and ways to talk to it."""

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import docker
import requests
from traitlets.config import PyFileConfigLoader

REPO = Path(__file__).resolve().parent.parent
# A second test session (say, a helper's) sets its own instance, so neither removes the other's containers.
INSTANCE = os.environ.get("LABDECK_TEST_INSTANCE", "labdecktest")
ADMIN_SERVICE = "labdeck-tests"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def remove_test_containers(instance: str = INSTANCE) -> int:
    """Remove every container of the test platform instance (cleanup by label)."""
    client = docker.from_env()
    removed = 0
    for c in client.containers.list(all=True, filters={"label": f"labdeck.instance={instance}"}):
        c.remove(force=True)
        removed += 1
    client.close()
    return removed


def remove_test_images(instance: str = INSTANCE) -> int:
    """Remove the images users of the test instance saved (repository ``<instance>-users/...``,
    also when tagged for a registry: ``host:port/<instance>-users/...``); returns tags removed."""
    client = docker.from_env()
    removed = 0
    try:
        for image in client.images.list():
            for tag in image.tags:
                repository = tag.rsplit(":", 1)[0]
                if repository.startswith(f"{instance}-users/") or f"/{instance}-users/" in repository:
                    try:
                        client.images.remove(tag, force=True)
                        removed += 1
                    except docker.errors.NotFound:
                        pass
    finally:
        client.close()
    return removed


class HubProcess:
    """``jupyterhub -f jupyterhub_config.py`` with a test data dir and extra config."""

    def __init__(self, workdir: Path, base_config: str, config_file: Path = REPO / "jupyterhub_config.py"):
        self.workdir = Path(workdir)
        self.config_file = Path(config_file)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.base_config = base_config
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.proxy_api_port = free_port()
        self.hub_port = free_port()
        self.service_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "hub.log"
        self.proc = None
        self._platform = None
        self.extra_config = ""

    # ---- process ----

    def _write_config(self) -> Path:
        path = self.workdir / "test_config.py"
        path.write_text(
            "c = get_config()  # noqa\n"
            f"c.JupyterHub.services.append({{'name': {ADMIN_SERVICE!r}, 'api_token': {self.token!r}, 'admin': True}})\n"
            "c.JupyterHub.load_roles.append({'name': 'labdeck-tests', 'scopes': ['admin:users', 'admin:servers', "
            "'admin:groups', 'read:hub', 'tokens', 'access:servers', 'access:services'], "
            f"'services': [{ADMIN_SERVICE!r}]}})\n"
            f"{self.base_config}\n{self.extra_config}\n"
        )
        return path

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            LABDECK_DATA_DIR=str(self.data_dir),
            LABDECK_EXTRA_CONFIG=str(self._write_config()),
            LABDECK_URL=self.url,
            LABDECK_HUB_PORT=str(self.hub_port),
            LABDECK_SERVICE_PORT=str(self.service_port),
            LABDECK_PROXY_API_URL=f"http://127.0.0.1:{self.proxy_api_port}",
            PATH=f"{REPO / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def start(self, timeout: float = 90) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(self.config_file)],
            cwd=self.workdir, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"hub did not answer in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # the proxy and the service run in sessions of their own, so a hub killed above leaves
        # them on our ports, where the next start would fail: stop whatever carries our data dir
        for pid in self._processes_with_our_data_dir():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def service_pids(self) -> list[int]:
        """The labdeck service this hub started (``python -m services.main``), while it runs."""
        found = []
        for pid in self._processes_with_our_data_dir():
            try:
                if b"services.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        return found

    def _processes_with_our_data_dir(self) -> list[int]:
        mark = f"LABDECK_DATA_DIR={self.data_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if mark in (entry / "environ").read_bytes().split(b"\0"):
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self, extra_config: str = "", while_stopped=None) -> None:
        """Stop and start again, with ``extra_config`` lines appended to the test config;
        ``while_stopped()`` runs in between."""
        self.stop()
        if while_stopped is not None:
            while_stopped()
        self.extra_config = extra_config
        self._platform = None
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- talking to it ----

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"token {self.token}")
        kwargs.setdefault("timeout", 60)
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers, **kwargs)

    @property
    def platform(self):
        """A services Platform built from exactly the hub's configuration."""
        if self._platform is None:
            from services.platform import Platform

            saved = dict(os.environ)
            os.environ.update({k: v for k, v in self.env().items() if k.startswith("LABDECK_")})
            try:
                config = PyFileConfigLoader("jupyterhub_config.py", path=str(REPO)).load_config()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            self._platform = Platform(config=config)
        return self._platform

    def server_model(self, user: str) -> dict | None:
        """The user's default server as the hub reports it (None when not running)."""
        r = self.api("GET", f"/users/{user}")
        if r.status_code == 404:
            return None  # the user itself is gone
        r.raise_for_status()
        return r.json().get("servers", {}).get("")

    def server_address(self, user: str) -> tuple[str, int]:
        """Where the hub (and its proxy route) reaches the user's default server: its database's
        record, which the REST API does not show."""
        db = sqlite3.connect(f"file:{self.data_dir / 'jupyterhub.sqlite'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT servers.ip, servers.port FROM servers JOIN spawners ON spawners.server_id = "
                             "servers.id JOIN users ON spawners.user_id = users.id WHERE users.name = ? AND "
                             "spawners.name = ''", (user,)).fetchone()
        finally:
            db.close()
        assert row, f"the hub has no server of {user}"
        return row[0], row[1]

    def record_server_address(self, user: str, ip: str, port: int) -> None:
        """Change where the hub's database says the user's server is (the hub must be stopped)."""
        db = sqlite3.connect(self.data_dir / "jupyterhub.sqlite")
        try:
            with db:
                db.execute("UPDATE servers SET ip = ?, port = ? WHERE id = (SELECT spawners.server_id FROM spawners "
                           "JOIN users ON spawners.user_id = users.id WHERE users.name = ? AND spawners.name = '')",
                           (ip, port, user))
        finally:
            db.close()

    def wait_for_server(self, user: str, timeout: float = 120) -> dict:
        """Wait until the user's server is ready; fail with the hub log if it does not start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(user)
            if model and model.get("ready"):
                return model
            if model is None and time.monotonic() > deadline - timeout + 5:
                # give the spawn a moment to register before treating absence as failure
                pending = self.api("GET", f"/users/{user}").json().get("pending")
                if not pending:
                    raise AssertionError(f"{user}'s server is not starting:\n{self.log_tail()}")
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server not ready after {timeout}s:\n{self.log_tail()}")

    def stop_server(self, user: str, timeout: float = 60) -> None:
        r = self.api("DELETE", f"/users/{user}/server")
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_model(user) is None:
                return
            time.sleep(0.2)
        raise AssertionError(f"{user}'s server did not stop:\n{self.log_tail()}")


def login_session(hub: HubProcess, login: str, password: str) -> requests.Session:
    """A requests session signed in through the hub's real login form."""
    s = requests.Session()
    r = s.get(f"{hub.url}/hub/login", timeout=30)
    r.raise_for_status()
    r = s.post(
        f"{hub.url}/hub/login",
        data={"username": login, "password": password, "_xsrf": xsrf_cookie(s, "/hub/login")},
        allow_redirects=False, timeout=30,
    )
    if r.status_code != 302:
        raise AssertionError(f"sign-in as {login!r} failed with {r.status_code}: {r.text[:2000]}")
    return s


def xsrf_cookie(session: requests.Session, path: str) -> str:
    """The _xsrf cookie a browser would send to ``path`` (the hub and the service each set one)."""
    matching = [c for c in session.cookies if c.name == "_xsrf" and path.startswith(c.path or "/")]
    matching.sort(key=lambda c: len(c.path or ""), reverse=True)
    return matching[0].value if matching else ""


def xsrf_post(session: requests.Session, hub: HubProcess, path: str, data=None, **kwargs) -> requests.Response:
    """POST a form to the hub with the session's XSRF token, like a browser would."""
    data = dict(data or {})
    data.setdefault("_xsrf", xsrf_cookie(session, path))
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("allow_redirects", False)
    return session.post(f"{hub.url}{path}", data=data, **kwargs)


def containers_of(user: str, instance: str = INSTANCE) -> list:
    """Containers of a user in the test instance, as docker-py objects (with attrs). A server
    from the warm pool has no user label (its labels were set before its claim): its name says."""
    from services.naming import escape_name

    client = docker.from_env()
    found = client.containers.list(all=True, filters={"label": [f"labdeck.instance={instance}", f"labdeck.user={user}"]})
    server = f"{instance}-nb-{escape_name(user)}"
    found += [c for c in client.containers.list(all=True, filters={"label": [
        f"labdeck.instance={instance}", "labdeck.pool=standby"]})
        if c.name == server or c.name.startswith(server + "--")]
    return found


def warm_servers(hub: "HubProcess", instance: str = INSTANCE, host: str | None = None) -> list:
    """The hub's warm servers that wait for a claim (running, their activation socket open).
    Claimed ones carry their user's server name instead of ``<instance>-warm-``."""
    client = docker.from_env()
    try:
        labels = [f"labdeck.instance={instance}", "labdeck.pool=standby"] + ([f"labdeck.host={host}"] if host else [])
        found = client.containers.list(filters={"label": labels})
    finally:
        client.close()
    from spawner.warm_server import SOCKET, pool_dir

    control = pool_dir(hub.platform) / "control"
    return [c for c in found if c.name.startswith(f"{instance}-warm-")
            and (control / c.labels["labdeck.id"] / SOCKET).exists()]


def wait_for_warm_servers(hub: "HubProcess", count: int, instance: str = INSTANCE, host: str | None = None,
                          timeout: float = 120) -> list:
    """Wait until ``count`` warm servers wait for a claim (on ``host``, or on all hosts together)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = warm_servers(hub, instance, host)
        if len(ready) >= count:
            return ready
        time.sleep(0.2)
    raise AssertionError(f"the warm pool never had {count} servers waiting on {host or 'all hosts'}:\n"
                         f"{hub.log_tail()}")


def dumps(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def page_text(response: requests.Response) -> str:
    """A hub page's text: the hub sends text/html without a charset, and pages are UTF-8."""
    return response.content.decode("utf-8")


SERVICE = "/services/labdeck/"


def process_exited(pid: int) -> bool:
    """The process is gone, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def user_token(hub: HubProcess, user: str) -> str:
    """An API token of ``user`` (with the user's own permissions), made by the admin."""
    r = hub.api("POST", f"/users/{user}/tokens", json={"note": "tests", "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


class ServiceClient:
    """Calls the labdeck service's JSON API as one user, with that user's token."""

    def __init__(self, hub: HubProcess, user: str):
        self.hub = hub
        self.user = user
        self.token = user_token(hub, user)

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        headers = kwargs.pop("headers", {})
        headers.setdefault("Authorization", f"token {self.token}")
        return requests.request(method, f"{self.hub.url}{SERVICE}api{path}", headers=headers, **kwargs)


def wait_for(predicate, timeout: float = 30, what: str = "condition", interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
