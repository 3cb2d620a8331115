"""'Start my Server' against the real hub, proxy and Docker engine."""

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import docker
import pytest
import requests

from services.models import Allocation, GpuAllocation, Workload
from tests.hubtools import INSTANCE, containers_of, login_session, page_text, xsrf_post

pytestmark = pytest.mark.integration


def the_container(user):
    found = [c for c in containers_of(user) if c.status == "running"]
    assert len(found) == 1, f"expected one running container of {user}, found {[c.name for c in found]}"
    return found[0]


def allocations_of(hub, user):
    with hub.platform.db.session() as s:
        return s.query(Allocation).filter_by(user=user).all()


def held_gpus(hub):
    with hub.platform.db.session() as s:
        return sorted((g.host, g.gpu_index) for g in s.query(GpuAllocation).all())


def open_lab(session, hub, user):
    """Open JupyterLab the way a browser does (OAuth through the hub), then ask its API."""
    lab = session.get(f"{hub.url}/user/{user}/lab", timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in page_text(lab), lab.url
    return session.get(f"{hub.url}/user/{user}/api/status", timeout=30)


def bridge_address(container) -> tuple[str, int]:
    """The server's own address on the engine's network (spawner/server_address.py)."""
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], 8888


def run_in(container, command, user="1000"):
    result = container.exec_run(["sh", "-c", command], user=user)
    return result.exit_code, result.output.decode()


def read_progress(hub, user):
    """The spawn progress events (server-sent events) as the spawn-pending page sees them."""
    events = []
    with hub.api("GET", f"/users/{user}/server/progress", stream=True, timeout=180) as r:
        assert r.status_code == 200, r.text
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


def follow_progress(hub, user, timeout=120):
    """Like read_progress, for a spawn another thread is starting: waits for it to begin."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with hub.api("GET", f"/users/{user}/server/progress", stream=True, timeout=180) as r:
            if r.status_code in (400, 404):  # not starting yet (404: the hub has no server for it yet)
                time.sleep(0.05)
                continue
            assert r.status_code == 200, r.text
            events = [json.loads(line[5:]) for line in r.iter_lines(decode_unicode=True)
                      if line and line.startswith("data:")]
            return [e.get("message", "") for e in events]
    raise AssertionError(f"{user}'s spawn never began")


def test_form_shows_choices_capacity_and_quota(hub, make_user, notebook_image):
    alice = make_user(groups=["bigdata"])
    s = login_session(hub, alice.email, alice.password)
    page = s.get(f"{hub.url}/hub/spawn", timeout=30)
    assert page.status_code == 200
    html = page_text(page)
    assert "Start my Server" in html
    assert 'name="image"' in html and "labdeck/notebook:latest" in html
    for field in ("cpu", "memory_gb", "gpus", "gpu_model", "region", "mount_host", "mount_container", "mount_mode"):
        assert f'name="{field}"' in html, field
    # both regions, their GPU models and free capacity
    assert "Default (A100)" in html and "East (T4)" in html
    assert "A100: 2 of 2" in html and "T4: 1 of 1" in html
    # the group override raised alice's CPU quota from 2 to 4
    assert re.search(r"Your quota:\s*4 cores · 8 GB memory ·\s*2 GPUs", html)
    # own storage pre-filled, shared data set offered
    assert 'value="~"' in html and "/home/jovyan/work" in html
    assert "datasets" in html
    assert 'id="add-mount"' in html


def test_start_through_form_gives_hardened_limited_container(hub, make_user, notebook_image, shared_root):
    bob = make_user()
    s = login_session(hub, bob.name, bob.password)
    s.get(f"{hub.url}/hub/spawn", timeout=30)
    with ThreadPoolExecutor(1) as pool:
        # progress is followed while the start runs: a server that is already up shows none
        post = pool.submit(xsrf_post, s, hub, "/hub/spawn", {
            "image": "labdeck/notebook:latest", "region": "default", "cpu": "1.5", "memory_gb": "1",
            "gpus": "1", "gpu_model": "A100",
            "mount_host": ["~", f"{shared_root}/mnist"],
            "mount_container": ["/home/jovyan/work", "/data/mnist"],
            "mount_mode": ["rw", "ro"],
        })
        messages = " | ".join(follow_progress(hub, bob.name))
        r = post.result()
    assert r.status_code == 302, r.text[:2000]
    assert "/spawn-pending/" in r.headers["Location"]
    assert "Reserved 1.5 cores, 1 GB, GPUs A100 #" in messages
    assert "Creating container" in messages and "JupyterLab is answering" in messages
    hub.wait_for_server(bob.name)

    c = the_container(bob.name)
    hc = c.attrs["HostConfig"]
    assert c.name == f"{INSTANCE}-nb-{bob.name}"
    assert hc["CpuQuota"] == 150_000 and hc["CpuPeriod"] == 100_000
    assert hc["Memory"] == 1024 * 2**20 and hc["MemorySwap"] == hc["Memory"]
    assert hc["PidsLimit"] > 0
    assert hc["CapDrop"] == ["ALL"] and not hc["CapAdd"]
    assert "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["Privileged"] is False
    assert not hc.get("DeviceRequests")  # declared inventory: no device is requested
    labels = c.labels
    assert labels["labdeck.user"] == bob.name and labels["labdeck.kind"] == "notebook"
    assert labels["labdeck.region"] == "default" and labels["labdeck.host"] == "local"
    assert labels["labdeck.instance"] == INSTANCE and labels["labdeck.id"].startswith("nb-")
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == labels["labdeck.gpus"] in ("0", "1")
    assert env["LABDECK_GPU_MODEL"] == "A100" and env["LABDECK_CPU"] == "1.5"
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/home/jovyan/work"]["RW"] is True
    assert mounts["/home/jovyan/work"]["Source"] == hub.platform.paths.user_storage(bob.name)
    assert mounts["/data/mnist"]["RW"] is False
    assert not any("docker.sock" in m["Source"] for m in c.attrs["Mounts"])

    # inside: not root, own storage writable, shared data readable but not writable
    assert run_in(c, "id -u")[1].strip() == "1000"
    # the server's runtime files are in memory, not on the disk a snapshot may be filling
    assert re.search(r"^jpserver-\d+\.json$", run_in(c, "ls /dev/shm/jupyter-runtime")[1], re.M)
    assert run_in(c, "echo hi > /home/jovyan/work/hello.txt")[0] == 0
    assert run_in(c, "cat /data/mnist/README")[1] == "handwritten digits\n"
    code, out = run_in(c, "touch /data/mnist/x")
    assert code != 0 and "Read-only file system" in out

    # JupyterLab answers through the proxy with the same login
    api = open_lab(s, hub, bob.name)
    assert api.status_code == 200 and "started" in api.json()

    # stopping frees the GPU and removes the container
    hub.stop_server(bob.name)
    assert containers_of(bob.name) == []
    assert allocations_of(hub, bob.name) == []
    with hub.platform.db.session() as db:
        w = db.get(Workload, labels["labdeck.id"])
        assert w.state == "ended" and w.end_reason == "stopped"


def test_start_through_rest_api_and_form_prefill(hub, make_user, notebook_image):
    carol = make_user()
    options = {"image": "labdeck/notebook:latest", "region": "east", "cpu": 1, "memory_gb": 1.5,
               "gpus": 1, "gpu_model": "T4",
               "mounts": [{"host_path": "~/project", "container_path": "/home/jovyan/work/project",
                           "read_only": False}]}
    r = hub.api("POST", f"/users/{carol.name}/server", json=options)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(carol.name)
    c = the_container(carol.name)
    assert c.labels["labdeck.region"] == "east" and c.labels["labdeck.host"] == "east-1"
    assert c.labels["labdeck.gpu_model"] == "T4" and c.labels["labdeck.gpus"] == "0"
    assert c.attrs["HostConfig"]["Memory"] == int(1.5 * 2**30)
    # the hub and its proxy reach it directly, not through the engine's docker-proxy
    assert hub.server_address(carol.name) == bridge_address(c)
    assert not c.attrs["HostConfig"]["PortBindings"]  # so it publishes nothing (no docker-proxy)
    project = hub.platform.paths.user_storage(carol.name) + "/project"
    assert {m["Destination"]: m["Source"] for m in c.attrs["Mounts"]}["/home/jovyan/work/project"] == project
    hub.stop_server(carol.name)

    # the form now offers carol's previous choices
    s = login_session(hub, carol.name, carol.password)
    html = page_text(s.get(f"{hub.url}/hub/spawn", timeout=30))
    assert re.search(r'<option value="east"\s+selected', html)
    assert re.search(r'value="T4" data-region="east"\s+selected', html)
    assert 'value="1.5"' in html and 'value="~/project"' in html  # what carol typed, not the resolved path


BAD_OPTIONS = [
    ({"cpu": "lots"}, "cpu: must be a number"),
    ({"cpu": 0}, "cpu: must be at least 0.1 cores"),
    ({"cpu": 3}, "cpu: 3 cores is more than your quota of 2 cores"),
    ({"cpu": 64}, "cpu: 64 cores is more than any host in region 'default' has (8 cores)"),
    ({"memory_gb": 5}, "memory_gb: 5 GB is more than your quota of 4 GB"),
    ({"memory_gb": -1}, "memory_gb: must be at least 0.25 GB"),
    ({"gpus": 1.5}, "gpus: must be a whole number"),
    ({"gpus": 3}, "gpus: 3 GPUs is more than your quota of 2 GPUs"),
    ({"gpus": 1, "gpu_model": "V100"}, "gpu_model: 'V100' is not offered in region 'default'; choose one of: A100"),
    ({"region": "mars"}, "region: 'mars' is not a region; choose one of: default, east"),
    ({"image": "alpine:latest"}, "image: 'alpine:latest' is not available to you"),
    ({"shell": "/bin/sh"}, "shell: unknown option"),
    ({"mounts": [{"host_path": "/etc", "container_path": "/data"}]}, "mounts[0].host_path"),
    ({"mounts": [{"host_path": "/var/run/docker.sock", "container_path": "/d.sock"}]}, "Docker socket"),
    ({"mounts": [{"host_path": "~/../other", "container_path": "/data"}]}, "must not contain '..'"),
    ({"mounts": [{"host_path": "~", "container_path": "/etc"}]}, "mounts[0].container_path"),
    ({"mounts": [{"host_path": "~", "container_path": "/data"}, {"host_path": "~/x", "container_path": "/data"}]},
     "mounts[1].container_path: /data is already used by mounts[0]"),
    ({"mounts": [{"container_path": "/data"}]}, "mounts[0]"),
    ({"mounts": "everything"}, "mounts"),
]


@pytest.mark.parametrize("bad, message", BAD_OPTIONS, ids=[m.split(":")[0] + "-" + str(i) for i, (_, m) in enumerate(BAD_OPTIONS)])
def test_bad_options_are_refused_with_a_clear_400_and_leave_nothing(hub, make_user, bad, message):
    dave = make_user()
    options = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 1, "memory_gb": 1, "gpus": 0, **bad}
    r = hub.api("POST", f"/users/{dave.name}/server", json=options)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert hub.server_model(dave.name) is None
    assert containers_of(dave.name) == []
    assert allocations_of(hub, dave.name) == []
    with hub.platform.db.session() as db:
        assert db.query(Workload).filter_by(user=dave.name).count() == 0


def test_bad_form_input_shows_the_message_on_the_form(hub, make_user):
    erin = make_user()
    s = login_session(hub, erin.name, erin.password)
    s.get(f"{hub.url}/hub/spawn", timeout=30)
    r = xsrf_post(s, hub, "/hub/spawn", {
        "image": "labdeck/notebook:latest", "region": "default", "cpu": "1", "memory_gb": "1",
        "gpus": "0", "gpu_model": "", "mount_host": ["/etc/<b>x"], "mount_container": ["/data"],
        "mount_mode": ["rw"],
    })
    assert r.status_code == 400
    assert "mounts[0].host_path" in page_text(r)
    assert "<b>x" not in page_text(r) and "&lt;b&gt;x" in page_text(r)  # input is escaped, never echoed raw
    assert 'id="labdeck-spawn-form"' in page_text(r)  # the form is shown again
    assert containers_of(erin.name) == [] and allocations_of(hub, erin.name) == []


def test_form_post_without_xsrf_is_refused(hub, make_user):
    frank = make_user()
    s = login_session(hub, frank.name, frank.password)
    r = s.post(f"{hub.url}/hub/spawn", data={"cpu": "1"}, allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert containers_of(frank.name) == []


def test_concurrent_gpu_starts_never_share_an_index(hub, make_user, notebook_image):
    users = [make_user() for _ in range(3)]
    options = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5,
               "gpus": 1, "gpu_model": "A100"}

    def start(u):
        return u, hub.api("POST", f"/users/{u.name}/server", json=options)

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(start, users))
    started = [u for u, r in results if r.status_code in (201, 202)]
    refused = [(u, r) for u, r in results if r.status_code == 400]
    assert len(started) == 2 and len(refused) == 1, [(u.name, r.status_code, r.text) for u, r in results]
    assert "2 × A100" not in refused[0][1].json()["message"]
    assert "gpus: 1 × A100 are not free in region 'default' now (0 of 2 free)" in refused[0][1].json()["message"]
    for u in started:
        hub.wait_for_server(u.name)
    indices = sorted(the_container(u.name).labels["labdeck.gpus"] for u in started)
    assert indices == ["0", "1"]
    assert held_gpus(hub) == [("local", 0), ("local", 1)]

    # stopping one server frees its GPU for the user who was refused
    freed = the_container(started[0].name).labels["labdeck.gpus"]
    hub.stop_server(started[0].name)
    late = refused[0][0]
    r = hub.api("POST", f"/users/{late.name}/server", json=options)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(late.name)
    assert the_container(late.name).labels["labdeck.gpus"] == freed
    for u in (started[1], late):
        hub.stop_server(u.name)
    assert held_gpus(hub) == []


def test_starts_beyond_a_hosts_slots_queue_and_show_their_place_in_line(hub, make_user, notebook_image):
    """Host east-1 lets one server start at a time (TEST_CONFIG): three users starting there
    together all get their server, and those who waited were told how many start ahead."""
    users = [make_user() for _ in range(3)]
    options = {"image": "labdeck/notebook:latest", "region": "east", "cpu": 1, "memory_gb": 1, "gpus": 0}
    with ThreadPoolExecutor(6) as pool:
        posts = [pool.submit(hub.api, "POST", f"/users/{u.name}/server", json=options) for u in users]
        progress = [pool.submit(follow_progress, hub, u.name) for u in users]
        answers = [f.result() for f in posts]
        messages = [f.result() for f in progress]
    assert all(r.status_code in (201, 202) for r in answers), [r.text for r in answers]
    for u in users:
        hub.wait_for_server(u.name)
        assert the_container(u.name).labels["labdeck.host"] == "east-1"
    waited = [m for m in messages if any(x.startswith("Waiting for a start slot on host east-1: ") for x in m)]
    assert waited, messages
    for m in waited:
        told = [x for x in m if x.startswith("Waiting for a start slot")]
        assert re.fullmatch(r"Waiting for a start slot on host east-1: [12] servers? starting ahead of yours",
                            told[0]), told
        assert m.index(told[-1]) < m.index("Starting container") < m.index("JupyterLab is answering")
    for u in users:
        hub.stop_server(u.name)


def test_hub_restart_keeps_server_running_reachable_and_its_gpu(hub, make_user, notebook_image):
    gina = make_user()
    r = hub.api("POST", f"/users/{gina.name}/server", json={
        "image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5,
        "gpus": 1, "gpu_model": "A100"})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(gina.name)
    before = the_container(gina.name)
    gpus_before = held_gpus(hub)

    # as a hub of the previous version recorded it: the published port; the restarted hub asks
    # the spawner where the server is and moves its record and proxy route
    hub.restart(while_stopped=lambda: hub.record_server_address(gina.name, "127.0.0.1", 1))

    model = hub.wait_for_server(gina.name, timeout=60)
    assert model["ready"]
    after = the_container(gina.name)
    assert after.id == before.id
    assert hub.server_address(gina.name) == bridge_address(after)
    assert held_gpus(hub) == gpus_before == [("local", int(before.labels["labdeck.gpus"]))]
    s = login_session(hub, gina.name, gina.password)
    assert open_lab(s, hub, gina.name).status_code == 200
    hub.stop_server(gina.name)
    assert held_gpus(hub) == []


def test_users_reach_only_their_own_server_and_storage(hub, make_user):
    owner, other = make_user(), make_user()
    r = hub.api("POST", f"/users/{other.name}/tokens", json={"note": "test", "expires_in": 600})
    assert r.status_code == 201, r.text
    other_token = {"Authorization": f"token {r.json()['token']}"}

    # another user's server cannot be started (or even seen) with one's own token
    r = hub.api("POST", f"/users/{owner.name}/server", json={"cpu": 1}, headers=other_token)
    assert r.status_code in (403, 404)
    assert containers_of(owner.name) == []

    # nor can another user's storage be mapped
    owner_storage = hub.platform.paths.user_storage(owner.name)
    r = hub.api("POST", f"/users/{other.name}/server", headers=other_token, json={
        "image": "labdeck/notebook:latest", "region": "default", "cpu": 1, "memory_gb": 1, "gpus": 0,
        "mounts": [{"host_path": owner_storage, "container_path": "/data"}]})
    assert r.status_code == 400
    assert r.json()["message"].startswith("mounts[0].host_path:")
    assert "is outside the places you may map: ~ (your storage)" in r.json()["message"]
    assert owner.name not in r.json()["message"].split("may map:")[-1]  # nobody else's storage is offered
    assert containers_of(other.name) == [] and allocations_of(hub, other.name) == []
