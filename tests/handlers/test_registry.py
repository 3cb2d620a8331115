"""With a registry configured, a saved image is pushed there, and a host that lacks it pulls it
before a session starts. The registry is a real one (Debian's docker-registry) on 127.0.0.1,
which Docker talks to over plain HTTP as it does for every loopback registry."""

import shutil
import subprocess
import time

import docker
import pytest
import requests

from tests.handlers.test_debug import create, ssh, terminate, wait_running
from tests.handlers.test_repository import save_snapshot
from tests.hubtools import ServiceClient, free_port, wait_for

pytestmark = pytest.mark.integration

CONFIG = """version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is missing; ./labdeck test installs it (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    (root / "config.yml").write_text(CONFIG.format(root=root / "data", port=port))
    proc = subprocess.Popen([binary, "serve", str(root / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=open(root / "registry.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/v2/", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def hub_with_registry(hub, registry):
    hub.restart(f"c.ImageRegistry.url = {registry!r}\n")
    yield hub
    hub.restart()


def test_saved_images_are_pushed_and_pulled_where_missing(hub_with_registry, registry, make_user, debug_image,
                                                          docker_client):
    hub = hub_with_registry
    user = make_user()
    api = ServiceClient(hub, user.name)
    session = wait_running(api, create(api, name="pushed")["id"])
    assert ssh(session["ssh_port"], "echo from-registry > /home/jovyan/mark.txt")[0] == 0
    image = save_snapshot(api, session["id"], "pushed-env")
    terminate(api, session["id"])
    image = wait_for(lambda: (i := api("GET", f"/images/{image['id']}").json())["pushed_to"] and i, 60,
                     "the image to be pushed")
    assert image["pushed_to"] == f"{registry}/{image['reference']}" and not image["error"]
    repository, tag = image["reference"].rsplit(":", 1)
    tags = requests.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10).json()
    assert tags["tags"] == [tag]

    # the host loses the image (as a host that never had it): starting a session pulls it back
    docker_client.images.remove(image["pushed_to"])
    docker_client.images.remove(image["reference"])
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image["reference"])
    again = wait_running(api, create(api, name="pulled", image=image["reference"])["id"], timeout=180)
    assert ssh(again["ssh_port"], "cat /home/jovyan/mark.txt")[1].strip() == "from-registry"
    docker_client.images.get(image["reference"])
    terminate(api, again["id"])
