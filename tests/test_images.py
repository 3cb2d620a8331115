"""The notebook image as users get it, and images/build.py's input hashing, against real Docker.

The notebook_image and docker_client fixtures are conftest's: the first use runs build.py once.
"""

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from services.paths import Mount
from tests.hubtools import wait_for
from tests.platform_containers import PlatformContainers

ROOT = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = ROOT / "images" / "build.py"
NOTEBOOK = "labdeck/notebook:latest"
TEST_LABEL = {"labdeck.test": "images"}


def run_build(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, f"build.py {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def load_build_module():
    spec = importlib.util.spec_from_file_location("labdeck_image_build", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_in_image(docker_client, notebook_image, request):
    """Run a shell command in the notebook image as the image's own user; returns its output."""
    containers = []

    def finalize():
        for container in containers:
            container.remove(force=True)

    request.addfinalizer(finalize)

    def run(command: str) -> str:
        container = docker_client.containers.create(
            notebook_image.id, ["sh", "-c", command], labels=TEST_LABEL,
            name=f"labdeck-test-images-{uuid.uuid4().hex[:8]}",
        )
        containers.append(container)
        container.start()
        status = container.wait(timeout=120)
        output = container.logs().decode().strip()
        assert status["StatusCode"] == 0, f"{command!r} exited {status['StatusCode']}: {output}"
        return output

    return run


@pytest.mark.integration
def test_runs_as_unprivileged_user(notebook_image, run_in_image):
    assert notebook_image.attrs["Config"]["User"] == "1000"
    assert run_in_image("id -u; id -g; id -un") == "1000\n100\njovyan"


@pytest.mark.integration
def test_a_container_made_by_the_recipe_logs_only_what_its_command_prints(docker_client, notebook_image):
    """The recipe starts containers with Docker's init as PID 1: the image's tini must not warn
    about it in every server's log (the spawner shows a failed start's last lines)."""
    containers = PlatformContainers(docker_client, "labdecktest-images", "images")
    try:
        container = containers.start(notebook_image, kind="notebook", id_prefix="nb",
                                     command=["sh", "-c", "echo only this"])
        assert container.wait(timeout=60)["StatusCode"] == 0
        assert container.logs().decode() == "only this\n"
    finally:
        containers.remove_all()


# what the hub's claim gives a server (spawner/warm_server.py); no hub answers at this address
STANDBY_ENV = {"JUPYTERHUB_API_URL": "http://127.0.0.1:9/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/user/tester/",
               "JUPYTERHUB_BASE_URL": "/", "JUPYTERHUB_USER": "tester", "JUPYTERHUB_API_TOKEN": "not-a-hub-token",
               "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-tester", "JUPYTERHUB_SERVER_NAME": "",
               "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/tester/oauth_callback",
               "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:8888/user/tester/", "JUPYTER_RUNTIME_DIR": "/dev/shm/rt"}


@pytest.mark.integration
def test_a_claimed_standby_server_says_listening_once_its_port_accepts_connections(docker_client, notebook_image,
                                                                                   run_in_image, tmp_path):
    """labdeck-standby tells the hub from inside Jupyter Server's port binding: never before it."""
    # the method it wraps is there (else it would fall back to polling the port from a thread)
    assert run_in_image("python3 -c 'from jupyter_server.serverapp import ServerApp; "
                        "print(callable(ServerApp._bind_http_server))'") == "True"
    control = tmp_path / "control"
    control.mkdir(mode=0o700)
    os.chown(control, 1000, 100)
    containers = PlatformContainers(docker_client, "labdecktest-images", "images")
    try:
        container = containers.start(notebook_image, kind="notebook", id_prefix="nb", command=["labdeck-standby"],
                                     env={"LABDECK_STANDBY_SECRET": "standby-secret"},
                                     mounts=[Mount(str(control), "/run/labdeck-standby", False, "test")])
        wait_for((control / "activate.sock").exists, 60, "the server to wait for its claim")
        with socket.socket(socket.AF_UNIX) as hub:
            hub.connect(str(control / "activate.sock"))
            claim = {"secret": "standby-secret", "env": STANDBY_ENV, "argv": ["jupyterhub-singleuser"]}
            hub.sendall(json.dumps(claim).encode() + b"\n")
            hub.settimeout(60)
            answers = hub.makefile()
            assert json.loads(answers.readline()) == {"ok": True, "error": ""}
            assert answers.readline() == "listening\n"
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
            socket.create_connection((ip, 8888), timeout=5).close()  # the first try: no retry
            assert answers.readline() == ""  # then the standby closes the connection
        r = requests.get(f"http://{ip}:8888/user/tester/api", timeout=30)
        assert r.status_code == 200 and "version" in r.json()
    finally:
        containers.remove_all()


@pytest.mark.integration
def test_work_directory_is_the_users_and_the_default(run_in_image):
    assert run_in_image("stat -c '%u %g' /home/jovyan/work") == "1000 100"
    assert run_in_image("pwd; echo $HOME") == "/home/jovyan/work\n/home/jovyan"
    assert run_in_image("touch /home/jovyan/work/probe && echo written") == "written"


@pytest.mark.integration
def test_singleuser_server_matches_the_hub(notebook_image, run_in_image):
    assert run_in_image("jupyterhub-singleuser --version") == "6.1.1"
    assert notebook_image.attrs["Config"]["Cmd"] == ["jupyterhub-singleuser"]
    assert "8888/tcp" in notebook_image.attrs["Config"]["ExposedPorts"]


@pytest.mark.integration
def test_lab_and_server_proxy_are_installed(run_in_image):
    out = run_in_image(
        "python -c 'import jupyterlab, jupyter_server_proxy; print(jupyterlab.__version__)'"
    )
    assert out.startswith("4.")
    # the Extension Manager installs nothing (its PyPI client cost every start a third of its time)
    assert "extension_manager = 'readonly'" in run_in_image("jupyter lab --show-config")
    # The venv on PATH belongs to the user, so `pip install` works in a running server.
    site_packages = "/opt/labdeck/venv/lib/python3.11/site-packages"
    assert run_in_image(f"command -v python; test -w {site_packages} && echo writable") == (
        "/opt/labdeck/venv/bin/python\nwritable"
    )


@pytest.mark.integration
def test_labels_describe_the_image(notebook_image):
    labels = notebook_image.labels
    assert re.fullmatch(r"[0-9a-f]{64}", labels["labdeck.inputs"])
    assert f"labdeck/notebook:{labels['labdeck.inputs'][:12]}" in notebook_image.tags
    assert labels["labdeck.description"].strip()
    assert labels["labdeck.kinds"] == "notebook,debug,job"
    assert labels["labdeck.capabilities"] == ""


@pytest.mark.integration
def test_second_build_changes_nothing(docker_client, notebook_image):
    output = run_build()
    tag = f"labdeck/notebook:{notebook_image.labels['labdeck.inputs'][:12]}"
    assert f"{tag} up to date" in output.splitlines()
    assert all(line.endswith(" up to date") for line in output.splitlines()), output
    assert docker_client.images.get(NOTEBOOK).id == notebook_image.id
    assert docker_client.images.get(tag).id == notebook_image.id


@pytest.mark.integration
def test_list_names_the_current_tags(notebook_image):
    tag = f"labdeck/notebook:{notebook_image.labels['labdeck.inputs'][:12]}"
    assert f"{tag} (labdeck/notebook:latest) present" in run_build("--list").splitlines()


def test_hash_follows_every_input_file(tmp_path):
    build = load_build_module()
    base = build.base_image()
    image_dir = tmp_path / "demo"
    image_dir.mkdir()
    (image_dir / "Dockerfile").write_text("FROM scratch\n")
    (image_dir / "requirements.txt").write_text("jupyterlab==4.6.6\n")
    first = build.user_image(image_dir, base).digest

    assert build.user_image(image_dir, base).digest == first  # stable
    (image_dir / "requirements.txt").write_text("jupyterlab==4.6.5\n")
    changed_requirements = build.user_image(image_dir, base).digest
    (image_dir / "extra.sh").write_text("echo hi\n")
    added_file = build.user_image(image_dir, base).digest
    other_base = build.Image("base", "0" * 64)
    changed_base = build.user_image(image_dir, other_base).digest

    digests = [first, changed_requirements, added_file, changed_base]
    assert len(set(digests)) == len(digests)
