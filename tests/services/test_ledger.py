"""The resource ledger: no GPU index, CPU or memory is ever given twice, across processes."""

import multiprocessing

import pytest

from services.errors import CapacityError, QuotaError
from services.identity import Requester
from services.models import Allocation, UsageCounter
from services.options import ResourceRequest
from services.workloads import end_workload, open_workload
from services.options import validate_request
from tests.services.platform_fixtures import make_platform


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path)


def request_for(platform, user, **opts):
    base = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 1, "memory_gb": 1, "gpus": 0}
    return validate_request(platform, Requester(user), "notebook", {**base, **opts})


def open_for(platform, user, **opts):
    return open_workload(platform, Requester(user), request_for(platform, user, **opts))


def test_gpus_are_given_once_and_come_back(platform):
    placements = [open_for(platform, f"u{i}", gpus=1, gpu_model="A100")[1] for i in range(3)]
    held = sorted((p.host, p.gpu_indices[0]) for p in placements)
    assert held == [("a1", 0), ("a1", 1), ("a2", 0)]
    with pytest.raises(CapacityError) as info:
        open_for(platform, "u9", gpus=1, gpu_model="A100")
    assert str(info.value) == ("gpus: 1 × A100 are not free in region 'default' now (0 of 3 free); "
                               "try fewer GPUs or later")
    end_workload(platform, placements[1].workload_id, "stopped")
    again = open_for(platform, "u9", gpus=1, gpu_model="A100")[1]
    assert (again.host, again.gpu_indices) == (placements[1].host, placements[1].gpu_indices)


def test_best_fit_keeps_whole_hosts_free_for_big_requests(platform):
    # a1 has 2 A100, a2 has 1: a single-GPU request goes to a2, so 2 × A100 still fits on a1
    one = open_for(platform, "small", gpus=1, gpu_model="A100")[1]
    assert one.host == "a2"
    two = open_for(platform, "big", gpus=2, gpu_model="A100")[1]
    assert two.host == "a1" and two.gpu_indices == [0, 1]


def test_cpu_and_memory_are_not_overcommitted(platform):
    open_for(platform, "u1", cpu=8, memory_gb=2)   # fills a1's CPUs
    open_for(platform, "u2", cpu=4, memory_gb=2)   # fills a2's CPUs
    with pytest.raises(CapacityError, match=r"cpu: 1 cores are not free on any host in region 'default' now"):
        open_for(platform, "u3", cpu=1, memory_gb=1)


def test_quota_counts_all_of_a_users_workloads(tmp_path):
    platform = make_platform(tmp_path, quota={"cpu": 3, "memory_gb": 16, "gpus": 1})
    open_for(platform, "alice", cpu=2, gpus=1, gpu_model="A100")
    with pytest.raises(QuotaError) as info:
        open_for(platform, "alice", cpu=1, gpus=1, gpu_model="A100")
    assert str(info.value).startswith("gpus: 1 more GPU(s) would exceed your quota of 1: 1 already held")
    with pytest.raises(QuotaError, match=r"cpu: 2 more cores would exceed your quota of 3: 2 already held"):
        open_for(platform, "alice", cpu=2)
    open_for(platform, "alice", cpu=1)  # exactly at the quota is fine


def test_refused_request_leaves_no_row_and_no_counter_change(platform):
    open_for(platform, "u1", gpus=2, gpu_model="A100")
    open_for(platform, "u2", gpus=1, gpu_model="A100")
    with platform.db.session() as s:
        before = sorted((c.scope, c.key, c.cpu_milli, c.memory_mb, c.gpus) for c in s.query(UsageCounter))
        n_alloc = s.query(Allocation).count()
    with pytest.raises(CapacityError):
        open_for(platform, "u3", gpus=1, gpu_model="A100")
    with platform.db.session() as s:
        after = sorted((c.scope, c.key, c.cpu_milli, c.memory_mb, c.gpus) for c in s.query(UsageCounter))
        assert s.query(Allocation).count() == n_alloc
        from services.models import Workload
        assert s.query(Workload).filter_by(user="u3").count() == 0
    assert after == before


def test_release_is_idempotent_and_counters_can_be_recomputed(platform):
    w, p = open_for(platform, "u1", cpu=2, memory_gb=3, gpus=1, gpu_model="T4")
    assert end_workload(platform, w.id, "stopped") is True
    assert end_workload(platform, w.id, "again") is False
    with platform.db.write_transaction() as s:
        platform.ledger.recompute_counters(s)
        assert s.query(UsageCounter).count() == 0
    cap = {r.region: r for r in platform.ledger.capacity()}["default"]
    assert cap.cpu_free == 12 and {m.model: m.free for m in cap.gpus} == {"A100": 3, "T4": 1}


def test_capacity_report(platform):
    open_for(platform, "u1", cpu=2, memory_gb=4, gpus=1, gpu_model="A100")
    cap = {r.region: r for r in platform.ledger.capacity()}
    d = cap["default"]
    assert (d.cpu_total, d.cpu_free, d.memory_total_gb, d.memory_free_gb) == (12, 10, 24, 20)
    assert {m.model: (m.free, m.total) for m in d.gpus} == {"A100": (2, 3), "T4": (1, 1)}
    assert cap["east"].gpus == () and cap["east"].cpu_free_largest == 2


def _grab(args):
    data_dir, index = args
    import pathlib
    platform = make_platform(pathlib.Path(data_dir))
    try:
        w, p = open_for(platform, f"p{index}", cpu=0.1, memory_gb=0.25, gpus=1, gpu_model="A100")
        return [(p.host, i) for i in p.gpu_indices]
    except CapacityError:
        return []


def test_allocation_is_atomic_across_processes(tmp_path):
    make_platform(tmp_path).db  # create the schema once
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(6) as pool:
        results = pool.map(_grab, [(str(tmp_path), i) for i in range(12)])
    held = [g for r in results for g in r]
    assert len(held) == 3  # a1 has 2 A100, a2 has 1
    assert len(set(held)) == len(held)  # no index given twice
