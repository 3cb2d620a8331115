"""Session fixtures shared by all tests: one real hub, one Docker engine, built images.

The hub runs with the repository's jupyterhub_config.py plus a test config: its own data
directory, free ports, the platform instance ``labdecktest`` (container names and labels,
so tests never touch a real platform's containers), a declared inventory of 2 A100 GPUs in
region "default" and 1 T4 in region "east" (both hosts are the local engine).
"""

import os
import secrets
import subprocess
import sys
from types import SimpleNamespace

import docker
import pytest

from spawner.bind_mounts import unmount_all_under
from tests.hubtools import INSTANCE, REPO, HubProcess, free_port, remove_test_containers, remove_test_images

NOTEBOOK_IMAGE = "labdeck/notebook:latest"
DEBUG_IMAGE = "labdeck/debug:latest"
# debug sessions' host ports; a concurrent test session (LABDECK_TEST_INSTANCE) picks another range
PORT_BASE = int(os.environ.get("LABDECK_TEST_PORT_BASE", "30000"))  # below the ephemeral range, as in production

TEST_CONFIG = f"""
c.Platform.instance = {INSTANCE!r}
c.Resources.hosts = [
    {{"name": "local", "region": "default", "docker_url": "unix:///var/run/docker.sock",
      "cpus": 8, "memory_gb": 16, "gpus": {{"A100": 2}}}},
    {{"name": "east-1", "region": "east", "docker_url": "unix:///var/run/docker.sock",
      "cpus": 4, "memory_gb": 8, "gpus": {{"T4": 1}}}},
]
c.Resources.region_titles = {{"default": "Default (A100)", "east": "East (T4)"}}
c.Quotas.default = {{"cpu": 2, "memory_gb": 4, "gpus": 2}}
c.Quotas.groups = {{"bigdata": {{"cpu": 4, "memory_gb": 8}}}}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90
c.Spawner.poll_interval = 5  # notice dead servers quickly in tests
c.LabdeckSpawner.start_slots = {{"east-1": 1}}  # starts there queue (test_spawn)
c.WarmPool.grow_to = 3  # after a burst the pool keeps 3, not 2 (test_warm_pool); small for 2-core machines
c.Monitor.interval = 1
c.DebugSessions.port_pool_first = {PORT_BASE}
c.DebugSessions.port_pool_last = {PORT_BASE + 19}
c.CacheSettings.storage = {{"east": {{"capacity_gb": 1}}}}
c.CacheSettings.user_quota_gb = 5
c.CacheSettings.max_rate_mb = 25  # copies take seconds, so tests can watch and interrupt them
"""


def docker_available() -> bool:
    try:
        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_client():
    if not docker_available():
        pytest.fail("No Docker engine answers; run the tests with ./labdeck test, which starts one")
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture(scope="session")
def built_images(docker_client):
    """Every platform image, built once by the one build entry point (no-op when up to date)."""
    subprocess.run([sys.executable, str(REPO / "images" / "build.py")], check=True, cwd=REPO)


@pytest.fixture(scope="session")
def notebook_image(docker_client, built_images):
    return docker_client.images.get(NOTEBOOK_IMAGE)


@pytest.fixture(scope="session")
def debug_image(docker_client, built_images):
    return docker_client.images.get(DEBUG_IMAGE)


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    (root / "mnist").mkdir()
    (root / "mnist" / "README").write_text("handwritten digits\n")
    return root


@pytest.fixture(scope="session")
def data_server(tmp_path_factory):
    """A plain HTTP server on 127.0.0.1 serving files for cache tasks (URL sources)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path_factory.mktemp("http-root")
    (root / "data").mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}/data/", root=root / "data")
    server.shutdown()


@pytest.fixture(scope="session")
def smtp_server():
    """A real SMTP server on 127.0.0.1 (aiosmtpd); ``.messages`` holds what it received."""
    from aiosmtpd.controller import Controller

    received = []

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            received.append(SimpleNamespace(to=list(envelope.rcpt_tos), sender=envelope.mail_from,
                                            text=envelope.content.decode("utf-8", "replace")))
            return "250 OK"

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    yield SimpleNamespace(host="127.0.0.1", port=port, messages=received)
    controller.stop()


@pytest.fixture(scope="session")
def hub(tmp_path_factory, docker_client, shared_root, data_server, smtp_server):
    remove_test_containers()
    workdir = tmp_path_factory.mktemp("hub")
    config = TEST_CONFIG + f"\nc.PathPolicy.shared_roots = [{{'name': 'datasets', 'path': {str(shared_root)!r}}}]\n"
    config += f"c.CacheSettings.allowed_urls = [{data_server.url!r}]\n"
    config += f"c.Mailer.smtp_host = {smtp_server.host!r}\nc.Mailer.smtp_port = {smtp_server.port}\n"
    proc = HubProcess(workdir, config)
    proc.start()
    yield proc
    try:
        proc.stop()
        remove_test_containers()
        remove_test_images()  # snapshots the tests saved: the engine keeps them otherwise
    finally:
        unmount_all_under(str(workdir))  # the warm pool's shared folder and any slot left mounted


@pytest.fixture(autouse=True)
def _hub_kept_running(request):
    """A test that stops the session hub and fails before starting it again fails alone: the
    hub is started again for the tests after it."""
    yield
    if "hub" in request.fixturenames:
        hub = request.getfixturevalue("hub")
        if not hub.running:
            hub.stop()
            hub.start()


def _user_factory(hub):
    """Make active accounts (password known) and their hub users, optionally in groups; yields
    the maker, then stops the servers they left running."""
    from services.accounts import AccountStore

    store = AccountStore(hub.platform.db)
    created = []

    def make(name=None, password="correct horse 1", groups=(), admin=False):
        name = name or f"u{secrets.token_hex(4)}"
        email = f"{name}@example.org"
        store.create(name, email, password)
        r = hub.api("POST", f"/users/{name}")
        assert r.status_code in (201, 409), r.text
        if admin:
            r = hub.api("PATCH", f"/users/{name}", json={"admin": True})
            assert r.status_code == 200, r.text
        for group in groups:
            hub.api("POST", f"/groups/{group}")
            r = hub.api("POST", f"/groups/{group}/users", json={"users": [name]})
            assert r.status_code == 200, r.text
        created.append(name)
        return SimpleNamespace(name=name, email=email, password=password)

    yield make
    for name in created:
        model = hub.server_model(name) if hub.running else None
        if model:
            hub.stop_server(name)


@pytest.fixture(scope="session")
def second_engine(docker_client, notebook_image):
    """A second Docker engine on this machine, with its own socket, data directory and bridge,
    holding the notebook image: a host for the admin's "add host" (see tests/engines.py)."""
    from tests.engines import SecondEngine

    engine = SecondEngine()
    engine.start()
    try:
        engine.load_image(NOTEBOOK_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def make_user(hub):
    """Factory: an active account (password known) and its hub user, optionally in groups."""
    yield from _user_factory(hub)


@pytest.fixture(scope="module")
def make_module_user(hub):
    """Like make_user, for module-scoped fixtures (users a whole test module shares)."""
    yield from _user_factory(hub)
