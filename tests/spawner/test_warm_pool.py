"""The warm server pool against the real hub, proxy and Docker engine: a default start gets a
server that was already running, with the user's own folder mounted into it."""

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.models import Allocation, Workload
from spawner.bind_mounts import current_mounts
from spawner.warm_claims import SERVER_PORT
from spawner.warm_pool import WarmPool
from spawner.warm_server import SOCKET, pool_dir
from tests.hubtools import (INSTANCE, containers_of, login_session, page_text, wait_for, wait_for_warm_servers,
                             warm_servers)
from tests.spawner.test_spawn import bridge_address, follow_progress, run_in, the_container

pytestmark = pytest.mark.integration

HOME = {"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}
DEFAULTS = {"image": "labdeck/notebook:latest", "region": "default", "mounts": [HOME]}  # 1 core, 2 GB


def waiting(hub, count=1, host="local"):
    return wait_for_warm_servers(hub, count, host=host)


def target(hub) -> int:
    """How many warm servers the hub's pool keeps on "local" now: its size, or more after the
    bursts of starts earlier tests made (the product's own reading of the workloads table)."""
    pool = WarmPool(hub.platform, SERVER_PORT)
    return pool.targets_for(pool.local_hosts())["local"]


def control_socket(hub, container) -> str:
    return str(pool_dir(hub.platform) / "control" / container.labels["labdeck.id"] / SOCKET)


def slot_of(hub, workload_id) -> str:
    return str(pool_dir(hub.platform) / "slots" / workload_id)


def mounted_at(path: str) -> bool:
    return any(m.mount_point == path for m in current_mounts())


def start(hub, user, options=DEFAULTS):
    r = hub.api("POST", f"/users/{user.name}/server", json=options)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(user.name)
    # a claimed warm server takes its user's server name in the background, once it answers
    wait_for(lambda: [c for c in containers_of(user.name) if c.status == "running"], 30, f"{user.name}'s container")
    return the_container(user.name)


def ask(hub, container, message: dict) -> dict:
    """Talk to a waiting server's activation socket the way the hub does."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(control_socket(hub, container))
        s.sendall(json.dumps(message).encode() + b"\n")
        return json.loads(s.makefile().readline())


def test_a_default_start_gets_a_warm_server_with_the_users_folder(hub, make_user):
    waiting(hub)
    alice = make_user()
    storage = Path(hub.platform.paths.user_storage(alice.name))
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "notes.txt").write_text("kept between servers\n")

    log_before = len(hub.log_path.read_text(errors="replace"))
    with ThreadPoolExecutor(1) as pool:
        started = pool.submit(start, hub, alice)
        messages = " | ".join(follow_progress(hub, alice.name))
        c = started.result()
    assert "Handing you a running server on host local" in messages, messages
    assert "Creating container" not in messages
    # while the hub waited, the server left it alone: no version check, no activity report yet
    activity = f"POST /hub/api/users/{alice.name}/activity"
    during_start = hub.log_path.read_text(errors="replace")[log_before:]
    assert activity not in during_start
    assert f"GET /hub/api (@{c.attrs['NetworkSettings']['IPAddress']})" not in during_start
    # the claimed container: renamed for its user, recorded under its own ID, the user's folder inside
    assert c.name == f"{INSTANCE}-nb-{alice.name}" and c.labels["labdeck.pool"] == "standby"
    assert hub.server_address(alice.name) == bridge_address(c)  # not through docker-proxy
    assert not c.attrs["HostConfig"]["PortBindings"]
    workload_id = c.labels["labdeck.id"]
    with hub.platform.db.session() as s:
        w = s.get(Workload, workload_id)
        assert (w.user, w.state, w.container_id) == (alice.name, "running", c.id)
        assert s.query(Allocation).filter_by(workload_id=workload_id).one().user == alice.name
    assert run_in(c, "cat /home/jovyan/work/notes.txt") == (0, "kept between servers\n")
    assert "jupyter_cookie_secret" in run_in(c, "ls /dev/shm/jupyter-runtime")[1]  # runtime files in memory
    assert run_in(c, "echo from the server > /home/jovyan/work/made-inside.txt")[0] == 0
    assert (storage / "made-inside.txt").read_text() == "from the server\n"
    hc = c.attrs["HostConfig"]
    assert hc["CapDrop"] == ["ALL"] and hc["CpuQuota"] == 100_000 and hc["Memory"] == 2048 * 2**20
    # JupyterLab runs as alice, behind the hub's login
    s = login_session(hub, alice.email, alice.password)
    lab = s.get(f"{hub.url}/user/{alice.name}/lab", timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in page_text(lab)
    assert s.get(f"{hub.url}/user/{alice.name}/api/contents/notes.txt", timeout=30).json()["name"] == "notes.txt"
    # ... and reports its activity later, as every server does
    wait_for(lambda: activity in hub.log_tail(5000), 30, "the server's first activity report")
    # the pool replaces what was claimed
    replaced = waiting(hub, 2)
    assert workload_id not in {w.labels["labdeck.id"] for w in replaced}

    # stopping it unmounts the user's folder from the slot and removes the slot, files intact
    slot = slot_of(hub, workload_id)
    assert mounted_at(slot)
    hub.stop_server(alice.name)
    assert not mounted_at(slot) and not os.path.exists(slot)
    assert (storage / "notes.txt").read_text() == "kept between servers\n"
    assert (storage / "made-inside.txt").exists()
    with hub.platform.db.session() as s:
        assert s.get(Workload, workload_id).state == "ended"


def test_only_the_pools_options_are_served_warm(hub, make_user):
    waiting(hub)
    bob = make_user()
    c = start(hub, bob, {**DEFAULTS, "memory_gb": 1})
    assert "labdeck.pool" not in c.labels and c.labels["labdeck.user"] == bob.name
    hub.stop_server(bob.name)


def test_a_waiting_server_refuses_wrong_secrets_and_missing_folders(hub):
    server = waiting(hub)[0]
    secret = dict(e.split("=", 1) for e in server.attrs["Config"]["Env"])["LABDECK_STANDBY_SECRET"]
    claim = {"env": {"JUPYTERHUB_USER": "mallory"}, "argv": ["jupyterhub-singleuser"]}
    assert ask(hub, server, {**claim, "secret": "guessed"}) == {"ok": False, "error": "wrong secret"}
    # the hub says it mounted a folder, but nothing arrived: no server without the user's files
    assert ask(hub, server, {**claim, "secret": secret, "home_mounted": True}) == {
        "ok": False, "error": "the user's folder did not arrive at /home/jovyan/work"}
    # still waiting, unchanged, for a real claim
    server.reload()
    assert server.status == "running" and os.path.exists(control_socket(hub, server))


def test_a_broken_warm_server_gives_way_to_a_cold_start(hub, make_user):
    """Warm servers that died while waiting are noticed at the claim: the start goes cold."""
    for c in waiting(hub, target(hub)):  # all of them, not one the pool is still starting
        c.kill()
    users = [make_user(), make_user()]
    for user in users:
        c = start(hub, user)
        assert "labdeck.pool" not in c.labels, "a dead warm server was handed out"
        assert run_in(c, "ls -d /home/jovyan/work")[0] == 0
    assert "starting cold" in hub.log_tail(20000)
    for user in users:
        hub.stop_server(user.name)


def test_a_hub_restart_keeps_claimed_servers_even_unrenamed_and_replaces_waiting_ones(hub, make_user):
    waiting(hub, 2)
    carol = make_user()
    claimed = start(hub, carol)
    workload_id = claimed.labels["labdeck.id"]
    assert claimed.labels.get("labdeck.pool") == "standby"
    before = {c.id for c in warm_servers(hub, host="local")}
    # its pool name back, as a hub stopped before the background rename ran would leave it:
    # the hub finds its server by ID
    claimed.rename(f"{INSTANCE}-warm-{workload_id}")

    hub.stop()
    hub.start()
    hub.wait_for_server(carol.name)
    replaced = waiting(hub, 2)
    assert not before & {c.id for c in replaced}, "warm servers of the old hub were kept"
    claimed.reload()
    assert claimed.status == "running" and mounted_at(slot_of(hub, workload_id))
    with hub.platform.db.session() as s:
        assert s.get(Workload, workload_id).state == "running"
        held = {a.workload_id for a in s.query(Allocation)}
    assert workload_id in held and not held & {c.labels["labdeck.id"] for c in replaced}

    hub.stop_server(carol.name)  # the restarted hub still knows the slot to unmount
    assert not mounted_at(slot_of(hub, workload_id)) and not os.path.exists(slot_of(hub, workload_id))


def test_the_pool_grows_after_more_people_started_at_once_than_it_held(hub, make_user):
    """The session hub's pool keeps 2 and may grow to 3 (tests/conftest.py)."""
    waiting(hub, target(hub))
    users = [make_user() for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        served = list(pool.map(lambda user: start(hub, user), users))
    assert sum("labdeck.pool" in c.labels for c in served) >= 2, "the waiting servers were not used"
    assert target(hub) == 3
    # once the burst is over, the pool refills to three: the next three find a server each
    assert len(waiting(hub, 3)) == 3
    assert "Warm server pool: keeping 3 on local (bursts of starts" in hub.log_tail(200_000)
    for user in users:
        hub.stop_server(user.name)
