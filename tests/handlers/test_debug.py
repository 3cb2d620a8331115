"""Remote debug against the real hub, service, Docker engine and a real SSH client."""

import asyncio
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import asyncssh
import docker
import pytest

from services.models import DebugSession, PortAllocation, Workload
from tests.hubtools import (SERVICE, ServiceClient, containers_of, login_session, page_text, process_exited, wait_for,
                             xsrf_post)

pytestmark = pytest.mark.integration

PASSWORD = "debug-pass-42"
BASE = {"image": "labdeck/debug:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5, "gpus": 0,
        "ports": 1, "password": PASSWORD}


def create(api, **options):
    r = api("POST", "/debug", json={"name": "probe", **BASE, **options})
    assert r.status_code == 201, r.text
    return r.json()


def wait_running(api, session_id, timeout=90):
    def running():
        s = api("GET", f"/debug/{session_id}").json()
        assert s["state"] != "ended", s
        return s if s["state"] == "running" else None

    return wait_for(running, timeout, f"session {session_id} to run")


def wait_ended(api, session_id, timeout=30):
    return wait_for(lambda: (s := api("GET", f"/debug/{session_id}").json())["state"] == "ended" and s,
                    timeout, f"session {session_id} to end")


def ssh(port, command, password=PASSWORD, user="jovyan"):
    """Run a command over SSH with a real client (asyncssh); returns (exit status, stdout)."""

    async def go():
        async with asyncssh.connect("127.0.0.1", port, username=user, password=password, known_hosts=None,
                                    client_keys=None, preferred_auth="password", connect_timeout=20) as conn:
            result = await conn.run(command, check=False, timeout=30)
            return result.exit_status, result.stdout

    return asyncio.run(go())


def wait_snapshot(api, image_id, timeout=180):
    """The image once its snapshot is no longer being saved (saved or failed)."""
    return wait_for(lambda: (i := api("GET", f"/images/{image_id}").json())["state"] != "saving" and i,
                    timeout, f"snapshot {image_id} to finish")


def terminate(api, session_id):
    r = api("POST", f"/debug/{session_id}/terminate")
    assert r.status_code == 200, r.text
    return r.json()


def held_ports(hub, session_id):
    with hub.platform.db.session() as s:
        return sorted(p.port for p in s.query(PortAllocation).filter_by(workload_id=session_id))


def test_session_through_api_ssh_login_ports_and_mapped_file(hub, make_user, debug_image):
    ann = make_user()
    storage = hub.platform.paths.user_storage(ann.name)
    with open(f"{storage}/hello.txt", "w") as f:
        f.write("from my storage\n")
    api = ServiceClient(hub, ann.name)
    session = create(api, name="resnet debugging", ports=3,
                     mounts=[{"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}])
    assert session["id"].startswith("dbg-") and session["state"] in ("starting", "running")
    session = wait_running(api, session["id"])
    first = session["ssh_port"]
    assert session["ports"] == [first, first + 1, first + 2] and session["port_range"] == f"{first}-{first + 2}"
    assert session["ssh_command"] == f"ssh -p {first} jovyan@127.0.0.1"

    status, out = ssh(first, "id -u; cat /home/jovyan/work/hello.txt; bash -lc 'echo $LABDECK_PORTS'")
    assert status == 0
    assert out.splitlines() == ["1000", "from my storage", f"{first},{first + 1},{first + 2}"]
    with pytest.raises(asyncssh.PermissionDenied):
        ssh(first, "true", password="wrong-password")
    with pytest.raises(asyncssh.PermissionDenied):
        ssh(first, "true", user="root")

    (c,) = containers_of(ann.name)
    ports = c.attrs["HostConfig"]["PortBindings"]
    assert ports["22/tcp"][0]["HostPort"] == str(first)
    assert ports[f"{first + 1}/tcp"][0]["HostPort"] == str(first + 1)
    assert c.labels["labdeck.kind"] == "debug" and c.labels["labdeck.ports"] == f"{first}-{first + 2}"
    assert c.attrs["HostConfig"]["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in c.attrs["HostConfig"]["SecurityOpt"]
    # the password is nowhere in clear text: not in docker inspect, not in logs, not in the database
    assert PASSWORD not in json.dumps(c.attrs)
    assert PASSWORD not in c.logs().decode(errors="replace")
    with hub.platform.db.session() as s:
        record = s.get(DebugSession, session["id"])
        assert record.password_hash.startswith("$2b$") and PASSWORD not in record.password_hash
        assert PASSWORD not in json.dumps(s.get(Workload, session["id"]).options)
    assert PASSWORD not in hub.log_path.read_text(errors="replace")

    ended = terminate(api, session["id"])
    assert ended["state"] == "ended" and ended["end_reason"] == "terminated by user"
    assert containers_of(ann.name) == [] and held_ports(hub, session["id"]) == []


def test_session_through_the_page(hub, make_user, debug_image):
    bo = make_user()
    s = login_session(hub, bo.name, bo.password)
    page = s.get(f"{hub.url}{SERVICE}debug/new", timeout=30)
    assert page.status_code == 200 and 'name="password"' in page_text(page) and 'name="ports"' in page_text(page)
    r = xsrf_post(s, hub, f"{SERVICE}debug/new", {
        "name": "from the page", "image": "labdeck/debug:latest", "region": "default", "cpu": "0.5",
        "memory_gb": "0.5", "gpus": "0", "gpu_model": "", "ports": "2", "password": PASSWORD,
        "mount_host": ["~"], "mount_container": ["/home/jovyan/work"], "mount_mode": ["ro"]})
    assert r.status_code == 302, page_text(r)[:2000]
    api = ServiceClient(hub, bo.name)
    (session,) = api("GET", "/debug").json()["sessions"]
    session = wait_running(api, session["id"])
    listing = page_text(s.get(f"{hub.url}{SERVICE}debug", timeout=30))
    assert session["id"] in listing and session["ssh_command"] in listing and session["port_range"] in listing
    status, out = ssh(session["ssh_port"], "touch /home/jovyan/work/x 2>&1; echo $?")
    assert "Read-only file system" in out
    terminate(api, session["id"])


BAD = [
    ({"ports": 0}, "ports: must be between 1 and 10 (port 1 is SSH)"),
    ({"ports": 11}, "ports: must be between 1 and 10 (port 1 is SSH)"),
    ({"ports": "two"}, "ports: must be a whole number"),
    ({"password": None}, "password: choose a password for SSH logins"),
    ({"password": "short"}, "password: must be at least 8 characters long"),
    ({"name": ""}, "name: give the task a name"),
    ({"image": "labdeck/notebook:latest"}, "image: 'labdeck/notebook:latest' is not available to you"),
    ({"cpu": 99}, "cpu: 99 cores is more than any host"),
    ({"mounts": [{"host_path": "/var/run/docker.sock", "container_path": "/d"}]}, "Docker socket"),
]


@pytest.mark.parametrize("bad, message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_is_refused_and_leaves_nothing(hub, make_user, bad, message):
    cy = make_user()
    api = ServiceClient(hub, cy.name)
    options = {"name": "probe", **BASE, **bad}
    r = api("POST", "/debug", json={k: v for k, v in options.items() if v is not None})
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert api("GET", "/debug").json() == {"sessions": []}
    assert containers_of(cy.name) == []
    with hub.platform.db.session() as s:
        assert s.query(Workload).filter_by(user=cy.name).count() == 0


def test_other_users_get_404_and_admins_see_everyone(hub, make_user, debug_image):
    owner, other = make_user(), make_user()
    mine, theirs = ServiceClient(hub, owner.name), ServiceClient(hub, other.name)
    session = create(mine)
    sid = session["id"]
    assert theirs("GET", f"/debug/{sid}").status_code == 404
    assert theirs("POST", f"/debug/{sid}/terminate").status_code == 404
    assert theirs("POST", f"/debug/{sid}/snapshot", json={"name": "steal"}).status_code == 404
    assert theirs("DELETE", f"/debug/{sid}").status_code == 404
    assert theirs("POST", "/debug/delete", json={"ids": [sid]}).status_code == 400
    assert theirs("GET", "/debug").json() == {"sessions": []}
    s = login_session(hub, other.name, other.password)
    assert s.get(f"{hub.url}{SERVICE}debug/{sid}/open/lab", timeout=30).status_code == 404
    assert mine("GET", f"/debug/{sid}").status_code == 200

    password = (hub.data_dir / "initial-admin-password").read_text().strip()
    admin = ServiceClient(hub, "admin")
    assert sid not in [x["id"] for x in admin("GET", "/debug").json()["sessions"]]
    assert sid in [x["id"] for x in admin("GET", "/debug?all=1").json()["sessions"]]
    assert admin("GET", f"/debug/{sid}").status_code == 200
    assert password  # the admin signs in like anyone else
    terminate(mine, sid)


def test_port_ranges_never_overlap_and_freed_ports_are_reused(hub, make_user, debug_image):
    users = [make_user() for _ in range(3)]
    apis = [ServiceClient(hub, u.name) for u in users]
    with ThreadPoolExecutor(3) as pool:
        sessions = list(pool.map(lambda api: create(api, ports=4), apis))
    ranges = [set(s["ports"]) for s in sessions]
    assert all(len(r) == 4 for r in ranges)
    assert not (ranges[0] & ranges[1] or ranges[0] & ranges[2] or ranges[1] & ranges[2])
    for s in sessions:
        assert sorted(s["ports"]) == list(range(min(s["ports"]), min(s["ports"]) + 4))  # contiguous
    # the pool has 20 ports: 12 held, so 9 more do not fit, with a clear refusal
    r = apis[0]("POST", "/debug", json={"name": "big", **BASE, "ports": 9})
    assert r.status_code == 400 and "9 consecutive free ports are not left on host local" in r.json()["message"]
    freed = sessions[1]["ports"]
    terminate(apis[1], sessions[1]["id"])
    again = create(apis[1], ports=4)
    assert again["ports"] == freed
    for api, s in zip(apis, (sessions[0], again, sessions[2])):
        terminate(api, s["id"])


def test_snapshot_keeps_files_but_not_mapped_data(hub, make_user, debug_image, docker_client):
    dee = make_user()
    with open(f"{hub.platform.paths.user_storage(dee.name)}/mapped.txt", "w") as f:
        f.write("mapped data\n")
    api = ServiceClient(hub, dee.name)
    session = wait_running(api, create(api, mounts=[{"host_path": "~", "container_path": "/home/jovyan/work"}])["id"])
    assert ssh(session["ssh_port"], "echo in-the-layer > /home/jovyan/made-here.txt")[0] == 0

    assert api("POST", f"/debug/{session['id']}/snapshot", json={"name": "My Image"}).status_code == 400
    r = api("POST", f"/debug/{session['id']}/snapshot", json={"name": "my-env", "tag": "v1", "kind": "debug"})
    assert r.status_code == 202, r.text
    image = r.json()
    assert image["state"] == "saving"
    # the session stays usable while it is saved
    assert ssh(session["ssh_port"], "echo still-here")[1].strip() == "still-here"
    image = wait_snapshot(api, image["id"])
    assert image["state"] == "saved", image
    dup = api("POST", f"/debug/{session['id']}/snapshot", json={"name": "my-env", "tag": "v1"})
    assert dup.status_code == 400 and "already have an image my-env:v1" in dup.json()["message"]

    offered = [i["name"] for i in api("GET", "/debug/options").json()["images"]]
    assert image["reference"] in offered
    labels = docker_client.images.get(image["reference"]).labels
    assert labels["labdeck.source"] == session["id"] and labels.get("labdeck.id", "") == ""
    terminate(api, session["id"])

    # a new session from the snapshot, with nothing mapped: its own file is there, the mapped one not
    fresh = wait_running(api, create(api, image=image["reference"])["id"])
    status, out = ssh(fresh["ssh_port"], "cat /home/jovyan/made-here.txt; ls /home/jovyan/work")
    assert status == 0 and out.strip() == "in-the-layer"
    terminate(api, fresh["id"])
    other = ServiceClient(hub, make_user().name)
    assert image["reference"] not in [i["name"] for i in other("GET", "/debug/options").json()["images"]]


def test_a_snapshot_is_kept_when_its_commit_outlasts_the_wait_or_the_service(hub, make_user, debug_image,
                                                                          docker_client):
    """The engine finishes a commit that nobody waits for any more, so the platform must not call
    it failed: (a) a commit longer than a short Docker call may take (it failed with "Read timed
    out" while the image appeared), (b) a commit under way when the service stops (the service
    waited for it before exiting, and the restart then marked it failed while the image appeared)."""
    gus = make_user()
    api = ServiceClient(hub, gus.name)
    hub.restart(extra_config="c.Platform.docker_timeout = 2")  # committing 1 GB takes longer
    saved = []
    try:
        session = wait_running(api, create(api, name="big layer")["id"])
        container = docker_client.containers.get(session["container_id"])
        code, out = container.exec_run(["sh", "-c", "head -c 1G /dev/urandom > /home/jovyan/big.bin"], user="jovyan")
        assert code == 0, out

        def snapshot(tag):
            r = api("POST", f"/debug/{session['id']}/snapshot", json={"name": "big-env", "tag": tag, "kind": "debug"})
            assert r.status_code == 202, r.text
            saved.append(r.json())
            return r.json()

        def committed(image):
            try:
                return docker_client.images.get(image["reference"]) is not None
            except docker.errors.ImageNotFound:
                return False

        slow = wait_snapshot(api, snapshot("slow")["id"], 240)
        assert slow["state"] == "saved", slow

        crashed = snapshot("crash")
        wait_for(lambda: f"Snapshot {crashed['id']}: committing" in hub.log_path.read_text(errors="replace"),
                 30, "the service to begin the commit")
        time.sleep(0.5)  # the request is on its way to the engine
        (service,) = hub.service_pids()
        os.kill(service, signal.SIGINT)
        wait_for(lambda: process_exited(service) or committed(crashed), 60, "the service to exit")
        assert not committed(crashed), "the service waited for the commit before it exited"
        hub.restart()  # with the usual settings again
        crashed = wait_snapshot(api, crashed["id"], 240)
        assert crashed["state"] == "saved", crashed
        for image in (slow, crashed):
            engine_image = docker_client.images.get(image["reference"])
            assert engine_image.labels["labdeck.source"] == session["id"]
            assert image["size_bytes"] >= 10**9 and engine_image.attrs["Size"] == image["size_bytes"]
        terminate(api, session["id"])
        # a session from the adopted snapshot has the file the layer held
        fresh = wait_running(api, create(api, image=crashed["reference"])["id"])
        code, out = docker_client.containers.get(fresh["container_id"]).exec_run(
            ["stat", "-c", "%s", "/home/jovyan/big.bin"], user="jovyan")
        assert (code, out.strip()) == (0, b"1073741824")
        terminate(api, fresh["id"])
        for image in saved:
            assert api("DELETE", f"/images/{image['id']}").status_code == 204
    finally:
        if hub.extra_config or not hub.running:
            hub.restart()
        for image in saved:  # 1 GB each: not left for the end of the session
            try:
                docker_client.images.remove(image["reference"], force=True)
            except docker.errors.ImageNotFound:
                pass


def test_end_states_and_batch_delete(hub, make_user, debug_image, docker_client):
    eve = make_user()
    api = ServiceClient(hub, eve.name)
    killed = wait_running(api, create(api, name="killed")["id"])
    vanished = wait_running(api, create(api, name="vanished")["id"])
    stopped = wait_running(api, create(api, name="stopped")["id"])

    docker_client.containers.get(killed["container_id"]).kill()
    docker_client.containers.get(vanished["container_id"]).remove(force=True)
    terminate(api, stopped["id"])
    assert wait_ended(api, killed["id"])["end_reason"] == "exited with code 137"
    assert wait_ended(api, vanished["id"])["end_reason"] == "lost: container vanished"
    assert held_ports(hub, killed["id"]) == [] and containers_of(eve.name) == []

    running = wait_running(api, create(api, name="still running")["id"])
    r = api("POST", "/debug/delete", json={"ids": [killed["id"], running["id"]]})
    assert r.status_code == 400 and "has not ended; terminate it first" in r.json()["message"]
    r = api("POST", "/debug/delete", json={"ids": [killed["id"], vanished["id"], stopped["id"]]})
    assert r.status_code == 200
    assert [s["id"] for s in api("GET", "/debug").json()["sessions"]] == [running["id"]]
    terminate(api, running["id"])


def test_sessions_survive_a_restart_of_hub_and_service(hub, make_user, debug_image, docker_client):
    fay = make_user()
    api = ServiceClient(hub, fay.name)
    keep = wait_running(api, create(api, name="keep", ports=2)["id"])
    gone = wait_running(api, create(api, name="gone")["id"])
    hub.stop()  # the service stops with the hub
    docker_client.containers.get(gone["container_id"]).remove(force=True)
    hub.start()

    api = ServiceClient(hub, fay.name)
    assert wait_ended(api, gone["id"])["end_reason"] == "lost: container vanished"
    after = api("GET", f"/debug/{keep['id']}").json()
    assert after["state"] == "running" and after["ports"] == keep["ports"]
    assert held_ports(hub, keep["id"]) == keep["ports"]
    assert ssh(keep["ssh_port"], "echo alive")[1].strip() == "alive"
    terminate(api, keep["id"])


def test_open_shows_jupyterlab_through_the_service(hub, make_user, debug_image):
    gus = make_user()
    api = ServiceClient(hub, gus.name)
    session = wait_running(api, create(api)["id"])
    s = login_session(hub, gus.name, gus.password)
    lab = s.get(f"{hub.url}{session['open_url']}", timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in page_text(lab)
    # JupyterLab's own API through the proxy, with labdeck's XSRF token, as the browser sends it
    xsrf = [c.value for c in s.cookies if c.name == "_xsrf" and c.path.startswith("/services/labdeck")][0]
    base = f"{hub.url}{SERVICE}debug/{session['id']}/open/api"
    r = s.post(f"{base}/contents", json={"type": "file"}, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 201, r.text
    assert s.post(f"{base}/contents", json={"type": "file"}, timeout=30).status_code == 403  # no token
    assert s.get(f"{hub.url}{SERVICE}debug/{session['id']}/open", timeout=30).url.endswith("/open/lab")
    terminate(api, session["id"])
    assert s.get(f"{hub.url}{session['open_url']}", timeout=30).status_code == 404


def test_the_form_shows_the_same_refusal_as_the_api(hub, make_user):
    hal = make_user()
    s = login_session(hub, hal.name, hal.password)
    s.get(f"{hub.url}{SERVICE}debug/new", timeout=30)
    form = {"name": "probe", "image": "labdeck/debug:latest", "region": "default", "cpu": "0.5",
            "memory_gb": "0.5", "gpus": "0", "ports": "1", "password": "short"}
    r = xsrf_post(s, hub, f"{SERVICE}debug/new", form)
    assert r.status_code == 400
    assert "password: must be at least 8 characters long" in page_text(r)
    assert 'id="debug-form"' in page_text(r) and 'value="probe"' in page_text(r)  # the form, kept
    r = xsrf_post(s, hub, f"{SERVICE}debug/new", {**form, "name": "<b>bold</b>", "password": PASSWORD})
    assert r.status_code == 400 and "name: give the task a name" in page_text(r)
    assert "&lt;b&gt;bold&lt;/b&gt;" in page_text(r) and "<b>bold</b>" not in page_text(r)  # escaped
    assert containers_of(hal.name) == []
