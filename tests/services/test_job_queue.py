"""The job queue's order: first come first served, small jobs may pass big ones, nobody starves."""

from datetime import timedelta

import pytest

from services.models import Job, Workload, utcnow
from services.workloads import end_workload
from tests.services.platform_fixtures import make_platform

HOSTS = [{"name": "h1", "region": "default", "cpus": 4, "memory_gb": 8, "gpus": {"A100": 2}}]


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path, hosts=HOSTS, quota={"cpu": 4, "memory_gb": 8, "gpus": 2},
                         JobSettings__max_bypasses=2)


def queue_job(platform, name, *, gpus=0, cpu=1.0, user=None, age=0):
    """A queued job row, as submit_job records it (no folder needed for placement)."""
    user = user or name
    with platform.db.write_transaction() as s:
        s.add(Workload(id=f"job-{name}", kind="job", user=user, name=name, state="queued", region="default",
                       image="img", cpu_milli=int(cpu * 1000), memory_mb=512, gpu_model="A100" if gpus else None,
                       gpu_count=gpus, options={}))
        s.flush()
        s.add(Job(workload_id=f"job-{name}", command="true", folder="/nonexistent",
                  queued_at=utcnow() - timedelta(seconds=1000 - age), groups=[]))


def place(platform) -> list[str]:
    return [w.removeprefix("job-") for w, _ in platform.job_queue._place()]


def states(platform) -> dict[str, str]:
    with platform.db.session() as s:
        return {w.id.removeprefix("job-"): w.state for w in s.query(Workload)}


def test_first_come_first_served_until_full(platform):
    for i, name in enumerate("abcde"):
        queue_job(platform, name, gpus=1, age=i)
    assert place(platform) == ["a", "b"]  # two GPUs
    assert place(platform) == []
    end_workload(platform, "job-a", "succeeded")
    assert place(platform) == ["c"]
    assert states(platform) == {"a": "ended", "b": "starting", "c": "starting", "d": "queued", "e": "queued"}


def test_small_job_may_pass_a_big_one_that_does_not_fit(platform):
    queue_job(platform, "one", gpus=1, age=0)
    assert place(platform) == ["one"]
    queue_job(platform, "big", gpus=2, age=1)   # needs both GPUs: waits
    queue_job(platform, "small", gpus=1, age=2)  # fits beside "one": starts before "big"
    assert place(platform) == ["small"]
    with platform.db.session() as s:
        assert s.get(Job, "job-big").bypassed == 1


def test_a_job_bypassed_too_often_holds_the_region_for_itself(platform):
    queue_job(platform, "cpu-hog", cpu=3, age=0)
    assert place(platform) == ["cpu-hog"]
    queue_job(platform, "big", cpu=2, age=1)      # does not fit beside the hog (4 CPUs)
    for i in range(3):
        queue_job(platform, f"small{i}", cpu=0.5, age=2 + i)
    assert place(platform) == ["small0", "small1"]  # two bypasses allowed (max_bypasses=2)
    assert place(platform) == []                    # small2 must wait behind "big" now
    end_workload(platform, "job-cpu-hog", "succeeded")
    assert place(platform) == ["big", "small2"]


def test_a_job_over_its_owners_quota_does_not_hold_others_back(platform):
    queue_job(platform, "mine1", gpus=2, user="alice", age=0)
    assert place(platform) == ["mine1"]
    queue_job(platform, "mine2", gpus=1, user="alice", age=1)  # alice's quota is 2 GPUs: waits
    queue_job(platform, "bobs", cpu=1, user="bob", age=2)
    assert place(platform) == ["bobs"]
    with platform.db.session() as s:
        assert s.get(Job, "job-mine2").bypassed == 0  # quota waits are not bypasses


def test_requeue_keeps_the_place_and_frees_what_was_held(platform):
    queue_job(platform, "a", gpus=2, age=0)
    queue_job(platform, "b", gpus=2, age=1)
    assert place(platform) == ["a"]
    platform.job_queue.requeue("job-a")  # its start was interrupted by a restart
    assert states(platform)["a"] == "queued"
    assert place(platform) == ["a"]  # still first
