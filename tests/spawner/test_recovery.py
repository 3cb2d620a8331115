"""Nothing is lost: after a hub restart the ledger matches what Docker runs."""

import time

import pytest

from services.models import Allocation, GpuAllocation, UsageCounter, Workload
from tests.hubtools import containers_of, wait_for

pytestmark = pytest.mark.integration

GPU_OPTIONS = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5,
               "gpus": 1, "gpu_model": "A100"}


def held_gpus(hub):
    with hub.platform.db.session() as s:
        return sorted((g.host, g.gpu_index, g.workload_id) for g in s.query(GpuAllocation).all())


def start(hub, user):
    r = hub.api("POST", f"/users/{user}/server", json=GPU_OPTIONS)
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(user)
    (c,) = [c for c in containers_of(user) if c.status == "running"]
    return c


def test_ledger_is_rebuilt_from_container_labels(hub, make_user, notebook_image):
    """The database lost the allocation (crash mid-write, restored backup): labels bring it back."""
    ivy = make_user()
    c = start(hub, ivy.name)
    wid = c.labels["labdeck.id"]
    expected = [("local", int(c.labels["labdeck.gpus"]), wid)]
    assert held_gpus(hub) == expected

    hub.stop()
    with hub.platform.db.write_transaction() as s:
        s.query(GpuAllocation).delete()
        s.query(Allocation).delete()
        s.query(UsageCounter).delete()
    hub.start()

    wait_for(lambda: held_gpus(hub) == expected, what="the GPU allocation to be restored from labels")
    with hub.platform.db.session() as s:
        alloc = s.get(Allocation, wid)
        assert (alloc.user, alloc.cpu_milli, alloc.memory_mb) == (ivy.name, 500, 512)
        assert s.get(UsageCounter, ("host", "local")).gpus == 1
    assert hub.server_model(ivy.name)["ready"]
    hub.stop_server(ivy.name)
    assert held_gpus(hub) == []


def test_server_that_vanished_while_the_hub_was_down_is_ended_and_freed(hub, make_user, notebook_image):
    jay = make_user()
    c = start(hub, jay.name)
    wid = c.labels["labdeck.id"]
    hub.stop()
    c.remove(force=True)  # gone behind the platform's back
    hub.start()

    wait_for(lambda: hub.server_model(jay.name) is None, what="the hub to notice the server is gone")
    wait_for(lambda: held_gpus(hub) == [], what="the GPU to be freed")
    with hub.platform.db.session() as s:
        w = s.get(Workload, wid)
        assert w.state == "ended"
        assert "gone" in w.end_reason or "vanished" in w.end_reason
    assert containers_of(jay.name) == []


def test_server_that_exited_on_its_own_is_ended_with_its_reason(hub, make_user, notebook_image):
    kim = make_user()
    c = start(hub, kim.name)
    wid = c.labels["labdeck.id"]
    c.kill()  # e.g. the OOM killer, or the Docker engine restarting
    wait_for(lambda: hub.server_model(kim.name) is None, timeout=90, what="the hub's poll to notice")
    wait_for(lambda: held_gpus(hub) == [], what="the GPU to be freed")
    with hub.platform.db.session() as s:
        w = s.get(Workload, wid)
        assert w.state == "ended" and "ExitCode=137" in w.end_reason
    assert containers_of(kim.name) == []  # the dead container is cleaned up too
