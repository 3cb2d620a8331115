"""CPU weight on the real hub and engine: the hub, its proxy and its service run in the
platform's group, notebook servers (warm or cold) and debug sessions under the interactive
group, batch jobs in Docker's own (services/cpu_groups.py)."""

import os
from pathlib import Path

import pytest

from benchmarks.cpu_accounting import tree
from services.cpu_groups import CpuGroups
from tests.handlers.test_debug import create as create_debug_session, terminate, wait_running
from tests.handlers.test_jobs import submit
from tests.hubtools import ServiceClient, containers_of, wait_for
from tests.spawner.test_warm_pool import DEFAULTS, start, waiting

pytestmark = pytest.mark.integration

PLATFORM, INTERACTIVE = CpuGroups().platform_group, CpuGroups().interactive_group


def cpu_cgroup(pid: int) -> str:
    """The cgroup of a process in the cpu controller's hierarchy (v1), or the unified one (v2)."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
    return next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))


def weight(group: str) -> int:
    for path in (Path("/sys/fs/cgroup/cpu") / group / "cpu.shares", Path("/sys/fs/cgroup") / group / "cpu.weight"):
        if path.exists():
            return int(path.read_text())
    raise AssertionError(f"no weight file for cgroup {group}")


@pytest.fixture(autouse=True)
def _needs_cgroups():
    if os.geteuid() != 0 or CpuGroups()._dir(PLATFORM) is None:
        pytest.skip("needs root and a cgroup file system")


def test_the_hub_with_its_proxy_and_service_runs_in_the_platforms_heavy_group(hub):
    processes = tree(hub.proc.pid)
    assert len(processes) >= 3, processes  # the hub, its proxy, the labdeck service
    assert {cpu_cgroup(pid) for pid in processes} == {f"/{PLATFORM}"}
    assert weight(PLATFORM) in (8192, 800)  # v1 shares, or v2 weight; a plain process has 1024 / 100


def test_servers_and_debug_sessions_run_in_the_interactive_group_and_jobs_do_not(hub, make_user):
    alice, bob = make_user(), make_user()
    waiting(hub)
    warm = start(hub, alice)  # from the pool
    cold = start(hub, bob, {**DEFAULTS, "memory_gb": 1})  # not the pool's options
    assert warm.labels.get("labdeck.pool") and not cold.labels.get("labdeck.pool")
    for container in (warm, cold):
        assert container.attrs["HostConfig"]["CgroupParent"] == f"/{INTERACTIVE}"
        assert cpu_cgroup(container.attrs["State"]["Pid"]).startswith(f"/{INTERACTIVE}/{container.id}")
    assert weight(INTERACTIVE) in (8192, 800)
    hub.stop_server(alice.name)
    hub.stop_server(bob.name)

    api = ServiceClient(hub, alice.name)
    session = create_debug_session(api, name="weighed")
    wait_running(api, session["id"])
    (debug,) = [c for c in containers_of(alice.name) if c.labels.get("labdeck.id") == session["id"]]
    assert cpu_cgroup(debug.attrs["State"]["Pid"]).startswith(f"/{INTERACTIVE}/")
    terminate(api, session["id"])

    job = submit(api, "sleep 30", name="batch")
    container = wait_for(lambda: [c for c in containers_of(alice.name)
                                  if c.labels.get("labdeck.id") == job["id"] and c.status == "running"], 60,
                         "the job's container")[0]
    assert container.attrs["HostConfig"]["CgroupParent"] == ""
    assert not cpu_cgroup(container.attrs["State"]["Pid"]).startswith(f"/{INTERACTIVE}/")
    assert api("POST", f"/jobs/{job['id']}/terminate").status_code == 200
