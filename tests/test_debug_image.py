"""The remote-debug image as the platform runs it: created through the one container recipe
(cap_drop ALL plus the image's label, no-new-privileges, limits), reached with a real SSH client
(asyncssh) and over HTTP, against the real Docker engine; and how build.py builds it on its parent.

conftest's notebook_image fixture runs images/build.py once, which builds this image too. Every
container here carries the label labdeck.test=debug-image and its own platform instance (so the hub
tests' clean-up leaves it alone), and is removed by this module's finalizer.
"""

import json
import re
import secrets
import socket
import time
from dataclasses import dataclass

import asyncssh
import pytest
import requests
from services.ssh_password import crypt_hash
from tests.platform_containers import PlatformContainers
from tests.test_images import load_build_module

integration = pytest.mark.integration

DEBUG_IMAGE = "labdeck/debug:latest"
TEST_LABEL = "debug-image"  # labdeck.test, on its containers and the snapshots taken of them
INSTANCE = "labdeck-debug-image-test"
CAPABILITIES = "AUDIT_WRITE,CHOWN,SETGID,SETUID,SYS_CHROOT"  # measured: each one is needed
PASSWORD = "correct horse 1"
WRONG_PASSWORD = "wrong horse 22"
PORTS = "40000,40001,40002"
BASE_URL = "/services/labdeck/debug/dbg-test/open/"
MAX_AUTH_TRIES = 3  # images/debug/sshd_config
READY_TIMEOUT = 90
# PASSWORD hashed by libxcrypt (Python 3.11's crypt module): schemes sshd takes besides bcrypt.
OTHER_SCHEMES = {
    "sha512-crypt": "$6$19lVi1rw2w5zVUG.$nQIH4Mun.wLmlAT3O0WFl3TaXgxmzb3c9Hw8tbi2FcNgLFsemLupzT2M"
                    "//jKxfUuVSJKytdia0XFHXaOv4w3/1",
    "yescrypt": "$y$j9T$CNWN35U9x097Vayw$pbD4/osYEjoJtFl4YmMzhCAo6mutosmPyvXdMX0CAq7",
}


@dataclass
class Session:
    container: object
    token: str
    ssh_port: int = 0
    jupyter_port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.jupyter_port}{path}"

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")

    def find_ports(self) -> None:
        self.container.reload()
        self.ssh_port = int(self.container.ports["22/tcp"][0]["HostPort"])
        self.jupyter_port = int(self.container.ports["8888/tcp"][0]["HostPort"])


@pytest.fixture(scope="module")
def debug_image(docker_client, notebook_image):
    return docker_client.images.get(DEBUG_IMAGE)


@pytest.fixture(scope="module")
def create_session(docker_client, debug_image, request):
    """Factory: a started debug container; ``wait=True`` also waits until sshd greets.

    ``env`` entries override the platform's variables; a value of None leaves one out. A
    ``command`` runs in the entrypoint's command mode (as jovyan, no sshd) instead of a session.
    """
    containers = PlatformContainers(docker_client, INSTANCE, TEST_LABEL)

    def finalize():
        containers.remove_all()
        for image in docker_client.images.list(filters={"label": f"labdeck.test={TEST_LABEL}"}):
            docker_client.images.remove(image.id)  # snapshots taken here

    request.addfinalizer(finalize)

    def create(env=None, *, wait=True, image=debug_image, command=None) -> Session:
        token = secrets.token_hex(16)
        environment = {
            "LABDECK_PASSWORD_HASH": crypt_hash(PASSWORD, rounds=4),
            "LABDECK_JUPYTER_TOKEN": token,
            "LABDECK_JUPYTER_BASE_URL": BASE_URL,
            "LABDECK_PORTS": PORTS,
            **(env or {}),
        }
        container = containers.start(
            image, kind="debug", id_prefix="dbg", command=command, ports={22: None, 8888: None},
            env={k: v for k, v in environment.items() if v is not None},
        )
        session = Session(container, token)
        if wait:
            session.find_ports()
            wait_for_sshd(session)
        return session

    return create


@pytest.fixture(scope="module")
def session(create_session):
    """One running session shared by the tests that do not end it."""
    return create_session()


def wait_for_sshd(session: Session) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", session.ssh_port), timeout=2) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        session.container.reload()
        if session.container.status != "running":
            pytest.fail(f"the debug container ended before sshd answered:\n{session.logs()}")
        time.sleep(0.2)
    pytest.fail(f"sshd did not answer within {READY_TIMEOUT} s:\n{session.logs()}")


def wait_for_jupyter(session: Session) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            requests.get(session.url(BASE_URL + "api/status"), timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail(f"Jupyter did not answer within {READY_TIMEOUT} s:\n{session.logs()}")


async def ssh(session: Session, username="jovyan", password=PASSWORD, **kwargs):
    return await asyncssh.connect(
        "127.0.0.1", port=session.ssh_port, username=username, password=password,
        known_hosts=None, client_keys=None, agent_path=None, preferred_auth="password", **kwargs,
    )


async def ssh_run(session: Session, command: str) -> str:
    async with await ssh(session) as conn:
        result = await conn.run(command, check=True)
        return result.stdout.strip()


@integration
def test_runs_hardened_with_the_capabilities_it_declares(debug_image, session):
    assert debug_image.labels["labdeck.kinds"] == "debug"
    assert debug_image.labels["labdeck.capabilities"] == CAPABILITIES
    host_config = session.container.attrs["HostConfig"]
    assert host_config["CapDrop"] == ["ALL"]
    assert sorted(host_config["CapAdd"]) == CAPABILITIES.split(",")
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert host_config["Privileged"] is False and host_config["PidsLimit"] == 4096


@integration
async def test_password_login_runs_commands_as_jovyan(session):
    out = await ssh_run(session, "id -u; id -gn; pwd; echo $LABDECK_PORTS; command -v python; "
                                 "grep CapEff /proc/self/status")
    assert out.splitlines() == [
        "1000", "users", "/home/jovyan", PORTS, "/opt/labdeck/venv/bin/python",
        "CapEff:\t0000000000000000",  # no capability reaches a session
    ]


@integration
async def test_interactive_login_shell_sees_the_platforms_variables(session):
    async with await ssh(session) as conn:
        async with conn.create_process(term_type="xterm") as shell:  # what `ssh -p PORT ...` gets
            shell.stdin.write('echo "PORTS=$LABDECK_PORTS"; command -v jupyter; tty; exit\n')
            out = await shell.stdout.read()
    assert f"PORTS={PORTS}" in out
    assert "/opt/labdeck/venv/bin/jupyter" in out
    assert "/dev/pts/" in out


@integration
async def test_hash_reaches_no_process_of_the_user(session):
    out = await ssh_run(session, "pid=$(pgrep -o -f bin/jupyter-lab); ps -o user= -p $pid; "
                                 "{ env; tr '\\0' '\\n' </proc/$pid/environ; } | grep -c PASSWORD_HASH || true")
    assert out.splitlines() == ["jovyan", "0"]


@integration
async def test_wrong_password_is_refused_three_times_per_connection(session):
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(session, password=WRONG_PASSWORD)

    tries = []

    class Guesser(asyncssh.SSHClient):
        def password_auth_requested(self):
            tries.append(1)
            return f"{WRONG_PASSWORD} {len(tries)}"

    with pytest.raises(asyncssh.DisconnectError, match="Too many authentication failures"):
        await ssh(session, password=None, client_factory=Guesser)
    assert len(tries) == MAX_AUTH_TRIES


@integration
async def test_root_cannot_log_in_even_with_the_password(session):
    # Give root the very same password, so that only sshd's rules stand in the way.
    exit_code, output = session.container.exec_run(
        ["sh", "-c", 'printf "root:%s\\n" "$LABDECK_PASSWORD_HASH" | chpasswd --encrypted'])
    assert exit_code == 0, output
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(session, username="root")
    assert "User root from" in session.logs() and "not allowed because not listed in AllowUsers" in session.logs()


@integration
async def test_clear_password_shows_nowhere(docker_client, session):
    await ssh_run(session, "true")
    with pytest.raises(asyncssh.PermissionDenied):
        await ssh(session, password=WRONG_PASSWORD)
    inspected = json.dumps(docker_client.api.inspect_container(session.container.id))
    logs = session.logs()
    assert "Failed password for jovyan" in logs and "Accepted password for jovyan" in logs
    for secret in (PASSWORD, WRONG_PASSWORD):
        assert secret not in inspected and secret not in logs


@integration
@pytest.mark.parametrize("path, token, status", [
    (BASE_URL + "api/status", True, 200),
    (BASE_URL + "api/status", False, 403),
    (BASE_URL + "lab", True, 200),
    (BASE_URL + "lab", False, 302),  # to the login page
    ("/api/status", True, 404),  # only under the base URL
])
def test_jupyter_answers_under_its_base_url_only_with_the_token(session, path, token, status):
    wait_for_jupyter(session)
    headers = {"Authorization": f"token {session.token}"} if token else {}
    response = requests.get(session.url(path), headers=headers, allow_redirects=False, timeout=10)
    assert response.status_code == status
    if status == 302:
        assert response.headers["Location"].startswith(BASE_URL + "login")


@integration
@pytest.mark.parametrize("scheme", sorted(OTHER_SCHEMES))
async def test_other_crypt_schemes_log_in(create_session, scheme):
    session = create_session({"LABDECK_PASSWORD_HASH": OTHER_SCHEMES[scheme]})
    assert await ssh_run(session, "id -un") == "jovyan"


@integration
async def test_host_keys_are_the_containers_own_and_survive_restarts(create_session):
    async def host_key(s):
        async with await ssh(s) as conn:
            return conn.get_server_host_key().get_fingerprint()

    first = create_session()
    key = await host_key(first)
    assert await host_key(create_session()) != key
    snapshot = first.container.commit(changes="LABEL labdeck.test=debug-image")  # as "save snapshot" does
    assert await host_key(create_session(image=snapshot)) != key
    first.container.restart()
    first.find_ports()
    wait_for_sshd(first)
    assert await host_key(first) == key  # no "host key changed" warning after a restart


@integration
def test_container_stops_when_sshd_dies(create_session):
    session = create_session()
    exit_code, output = session.container.exec_run(["sh", "-c", "kill $(cat /run/sshd.pid)"])
    assert exit_code == 0, output
    status = session.container.wait(timeout=60)["StatusCode"]
    assert status != 0  # sshd itself exits 0 on SIGTERM: not a clean end of the session
    assert "debug-entrypoint: sshd exited" in session.logs()


@integration
def test_docker_stop_ends_both_cleanly(create_session):
    session = create_session()
    wait_for_jupyter(session)
    session.container.stop(timeout=30)  # SIGKILL, exit 137, if Jupyter were not reached
    assert session.container.wait(timeout=60)["StatusCode"] == 0
    assert "received signal 15, stopping" in session.logs()  # Jupyter's own shutdown


@integration
@pytest.mark.parametrize("env, message", [
    ({"LABDECK_PASSWORD_HASH": None}, "LABDECK_PASSWORD_HASH is not set"),
    ({"LABDECK_PASSWORD_HASH": PASSWORD}, "LABDECK_PASSWORD_HASH is not a crypt(3) hash"),
    ({"LABDECK_PASSWORD_HASH": OTHER_SCHEMES["yescrypt"] + "\nroot::0:0:99999:7:::"},
     "LABDECK_PASSWORD_HASH is not a crypt(3) hash"),
    ({"LABDECK_JUPYTER_TOKEN": None}, "LABDECK_JUPYTER_TOKEN is not set"),
    ({"LABDECK_SSH_PORT": "8888"}, "LABDECK_SSH_PORT must be a port number"),
])
def test_refuses_to_start_with_bad_settings(create_session, env, message):
    session = create_session(env, wait=False)
    assert session.container.wait(timeout=60)["StatusCode"] == 64
    logs = session.logs()
    assert message in logs and "not starting" in logs
    assert PASSWORD not in logs


@integration
def test_with_a_command_runs_it_as_jovyan_and_nothing_else(create_session):
    session = create_session(wait=False, command=[
        "sh", "-c", "id -u; id -gn; echo ${LABDECK_PASSWORD_HASH-no hash}; pgrep -x sshd || echo no sshd; "
                    "grep CapEff /proc/self/status; exit 3"])
    assert session.container.wait(timeout=60)["StatusCode"] == 3  # the command's own exit status
    assert session.logs().splitlines() == [
        "1000", "users", "no hash", "no sshd", "CapEff:\t0000000000000000"]


@integration
def test_command_mode_serves_jupyter_as_jovyan_and_stops_cleanly(create_session):
    """As "Start my Server" runs a debug-derived image (a snapshot, the desktop image)."""
    token = secrets.token_hex(16)
    session = create_session({"JUPYTER_TOKEN": token}, wait=False, command=[
        "jupyter", "lab", "--no-browser", "--ip=0.0.0.0", "--port=8888", f"--ServerApp.base_url={BASE_URL}"])
    session.find_ports()
    wait_for_jupyter(session)
    response = requests.get(session.url(BASE_URL + "api/status"),
                            headers={"Authorization": f"token {token}"}, timeout=10)
    assert response.status_code == 200
    exit_code, output = session.container.exec_run(
        ["sh", "-c", "ps -o user= -p $(pgrep -o -f bin/jupyter-lab); pgrep -x sshd || echo no sshd"])
    assert exit_code == 0 and output.decode().split() == ["jovyan", "no", "sshd"]
    # tini, as root without CAP_KILL, cannot signal jovyan's processes: the entrypoint passes
    # SIGTERM on, so Jupyter shuts down by itself instead of being killed after the timeout
    session.container.stop(timeout=30)
    assert session.container.wait(timeout=60)["StatusCode"] == 0
    logs = session.logs()
    assert "received signal 15, stopping" in logs and "Unexpected error when forwarding signal" not in logs


def make_image_dir(root, name, parent=None, content="FROM ${BASE}\n"):
    directory = root / name
    directory.mkdir()
    (directory / "Dockerfile").write_text(content)
    if parent is not None:
        (directory / "PARENT").write_text(f"{parent}\n")
    return directory


def test_parents_come_first_and_feed_the_hash(tmp_path):
    build = load_build_module()
    base = build.base_image()
    plain = make_image_dir(tmp_path, "a-plain")
    make_image_dir(tmp_path, "b-child", parent="c-parent")
    parent = make_image_dir(tmp_path, "c-parent")
    make_image_dir(tmp_path, "d-grandchild", parent="b-child")

    images = build.user_images(base, tmp_path)
    by_name = {image.name: image for image in images}
    assert [image.name for image in images] == ["a-plain", "c-parent", "b-child", "d-grandchild"]
    assert by_name["a-plain"].parent == base and by_name["c-parent"].parent == base
    assert by_name["b-child"].parent == by_name["c-parent"]
    assert by_name["d-grandchild"].parent == by_name["b-child"]
    # An image without PARENT hashes as before: existing images are not rebuilt.
    assert by_name["a-plain"] == build.user_image(plain, base)

    (parent / "Dockerfile").write_text("FROM ${BASE}\nRUN true\n")
    changed = {image.name: image.digest for image in build.user_images(base, tmp_path)}
    assert changed["a-plain"] == by_name["a-plain"].digest
    assert all(changed[name] != by_name[name].digest for name in ("c-parent", "b-child", "d-grandchild"))


@pytest.mark.parametrize("parents, message", [
    ({"x": "nothing-here"}, "names 'nothing-here', which is not a directory with a Dockerfile"),
    ({"x": "y", "y": "x"}, "images build on each other in a circle"),
    ({"x": "x"}, "images build on each other in a circle: x <- x"),
])
def test_bad_parents_are_refused(tmp_path, parents, message):
    build = load_build_module()
    for name, parent in parents.items():
        make_image_dir(tmp_path, name, parent=parent)
    with pytest.raises(build.BuildError, match=re.escape(message)):
        build.user_images(build.base_image(), tmp_path)


@integration
def test_built_on_the_current_notebook_image(notebook_image, debug_image):
    layers = debug_image.attrs["RootFS"]["Layers"]
    notebook_layers = notebook_image.attrs["RootFS"]["Layers"]
    assert layers[:len(notebook_layers)] == notebook_layers
    build = load_build_module()
    debug = next(i for i in build.user_images(build.base_image()) if i.name == "debug")
    assert debug.parent.name == "notebook"
    assert debug_image.labels["labdeck.inputs"] == debug.digest
    assert notebook_image.labels["labdeck.inputs"] == debug.parent.digest
