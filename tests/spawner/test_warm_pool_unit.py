"""Which starts the warm pool serves: only those a running container can become, and when it
refills (pure logic)."""

import asyncio
import os

import pytest

from services.identity import Requester
from services.options import validate_request
from spawner import warm_server
from spawner.bind_mounts import bind, is_mount_point
from spawner.warm_pool import WarmPool
from spawner.warm_server import WarmServer, remove_folder
from tests.services.platform_fixtures import make_platform

ALICE = Requester("alice")
HOME = {"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}


@pytest.fixture
def pool(tmp_path):
    platform = make_platform(tmp_path)
    pool = WarmPool(platform, 8888)
    pool.hosts = platform.resources.all_hosts()  # as if started: no Docker here
    return pool


@pytest.mark.parametrize("options, served", [
    ({}, True),  # the defaults: the first notebook image, 1 core, 2 GB, no GPU, no folder
    ({"cpu": 1, "memory_gb": 2, "gpus": 0, "image": "labdeck/notebook:latest"}, True),
    ({"mounts": [HOME]}, True),  # the user's own folder arrives by mount propagation
    ({"mounts": [{**HOME, "host_path": "~/project"}]}, True),
    ({"region": "east"}, True),
    ({"cpu": 2}, False),  # limits and labels were set when the container was created
    ({"memory_gb": 1}, False),
    ({"gpus": 1, "gpu_model": "A100"}, False),  # no GPU can be added to a running container
    ({"mounts": [{**HOME, "read_only": True}]}, False),
    ({"mounts": [{**HOME, "container_path": "/home/jovyan/work/data"}]}, False),
    ({"mounts": [HOME, {**HOME, "host_path": "~/b", "container_path": "/data"}]}, False),
])
def test_serves_only_the_pools_own_options(pool, options, served):
    request = validate_request(pool.platform, ALICE, "notebook", {"region": "default", **options})
    assert pool.serves(request) is served


def test_serves_nothing_while_off_or_for_other_kinds(pool):
    request = validate_request(pool.platform, ALICE, "notebook", {"region": "default"})
    assert pool.serves(request)
    job = validate_request(pool.platform, ALICE, "job", {"region": "default"})
    assert not pool.serves(job)
    pool.hosts = []
    assert not pool.serves(request)


def warm(pool, host, n):
    return WarmServer(f"nb-{host}{n}", host, f"c{n}", "127.0.0.1", 40000 + n, "s", "/slot", "/control")


def test_take_gives_each_warm_server_once_from_the_region_asked(pool):
    pool.ready = {"a1": [warm(pool, "a1", 1)], "a2": [warm(pool, "a2", 2)], "e1": [warm(pool, "e1", 3)]}
    assert pool.take("east").workload_id == "nb-e13"
    assert pool.take("east") is None
    taken = {pool.take("default").workload_id, pool.take("default").workload_id}
    assert taken == {"nb-a11", "nb-a22"} and pool.take("default") is None
    returned = warm(pool, "a2", 2)
    pool.give_back(returned)  # a start refused before its claim
    assert pool.take("default") == returned


def test_default_image_is_the_first_offered_to_everyone(tmp_path):
    platform = make_platform(tmp_path, images=[
        {"name": "lab/vision:1", "title": "Vision", "groups": ["vision"]},
        {"name": "lab/batch:1", "title": "Batch", "kinds": ["job"]},
        {"name": "lab/everyone:2", "title": "Everyone", "kinds": ["notebook"]},
    ])
    assert WarmPool(platform, 8888).image == "lab/everyone:2"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_removing_a_slot_unmounts_the_users_folder_and_keeps_its_files(tmp_path):
    """Also when the data folder is reached through a link: the mount table names real paths."""
    (tmp_path / "real" / "slots" / "nb-1").mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "real")
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    slot = str(tmp_path / "data" / "slots" / "nb-1")
    bind(str(home), slot)
    remove_folder(slot)
    assert not os.path.exists(slot) and not is_mount_point(str(tmp_path / "real" / "slots" / "nb-1"))
    assert (home / "notes.txt").read_text() == "mine"


def test_refills_wait_until_no_cold_start_is_under_way(pool, monkeypatch):
    """In a burst larger than the pool, replacing claimed servers would take the CPU from the
    people still waiting for a cold start."""
    host = pool.hosts[0]
    made = []

    async def create(platform, on_host, blueprint):
        made.append(on_host.name)
        return object()

    async def same_targets():
        pass

    monkeypatch.setattr(warm_server, "create", create)
    monkeypatch.setattr(pool, "_update_targets", same_targets)
    pool.hosts, pool.ready, pool.targets, pool.refill_delay = [host], {host.name: []}, {host.name: 1}, 0.05

    async def scenario():
        pool.cold_start_began()
        refill = asyncio.ensure_future(pool._refill_forever())
        pool._wake.set()
        await asyncio.sleep(0.4)
        waited = list(made)
        pool.cold_start_ended()
        await asyncio.sleep(0.4)
        refill.cancel()
        return waited

    assert asyncio.run(scenario()) == [] and made == [host.name]
