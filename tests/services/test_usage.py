"""A user's usage for the personal centre: month bounds, hours in a month, storage size, the
whole report on a real SQLite platform."""

import os
from datetime import datetime

import pytest

from services.caches import GB
from services.errors import OptionError
from services.identity import Requester
from services.models import Allocation, Cache, Workload
from services.usage import FolderSize, Span, active_workloads, folder_size, hours_in, month_bounds, month_usage
from tests.services.platform_fixtures import make_platform

NOW = datetime(2026, 3, 15, 12, 0)
D = datetime


@pytest.mark.parametrize("text, start, end", [
    ("2026-02", D(2026, 2, 1), D(2026, 3, 1)),
    ("2026-12", D(2026, 12, 1), D(2027, 1, 1)),
    (" 2025-01 ", D(2025, 1, 1), D(2025, 2, 1)),
    (None, D(2026, 3, 1), D(2026, 4, 1)),
    ("", D(2026, 3, 1), D(2026, 4, 1)),
])
def test_month_bounds(text, start, end):
    assert month_bounds(text, NOW) == (start, end)


@pytest.mark.parametrize("text", ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "march", "2026-01-01",
                                  "9999-12", "0001-01"])
def test_a_malformed_month_is_refused_naming_the_field(text):
    with pytest.raises(OptionError) as info:
        month_bounds(text, NOW)
    assert info.value.field == "month" and "YYYY-MM, such as 2026-03" in str(info.value)


MARCH = (D(2026, 3, 1), D(2026, 4, 1))


def span(start, end, cpu=1000, gpus=0, model=None):
    return Span(cpu_milli=cpu, gpu_count=gpus, gpu_model=model, started_at=start, ended_at=end)


@pytest.mark.parametrize("spans, cpu_hours, gpu_hours, counted", [
    ([], 0, {}, 0),
    # wholly inside: 2 cores × 3 h
    ([span(D(2026, 3, 2, 9), D(2026, 3, 2, 12), cpu=2000)], 6, {}, 1),
    # started in February: only March counts (1 h)
    ([span(D(2026, 2, 28, 20), D(2026, 3, 1, 1))], 1, {}, 1),
    # still running: up to now (12 h on the 15th), half a core
    ([span(D(2026, 3, 15, 0), None, cpu=500)], 6, {}, 1),
    # ended before, started after, never started: nothing
    ([span(D(2026, 2, 1), D(2026, 2, 2)), span(D(2026, 4, 1), D(2026, 4, 2)), span(None, None)], 0, {}, 0),
    # GPU-hours by model; a workload without a model is listed as unspecified
    ([span(D(2026, 3, 3, 0), D(2026, 3, 3, 2), gpus=2, model="A100"),
      span(D(2026, 3, 4, 0), D(2026, 3, 4, 1), gpus=1, model="T4"),
      span(D(2026, 3, 5, 0), D(2026, 3, 5, 1), gpus=1, model="A100"),
      span(D(2026, 3, 6, 0), D(2026, 3, 6, 1), gpus=1)], 5, {"A100": 5, "T4": 1, "unspecified": 1}, 4),
])
def test_hours_in_a_month(spans, cpu_hours, gpu_hours, counted):
    hours = hours_in(spans, *MARCH, NOW)
    assert hours.cpu == pytest.approx(cpu_hours)
    assert hours.gpu == pytest.approx(gpu_hours) and list(hours.gpu) == sorted(gpu_hours)
    assert hours.workloads == counted


def test_a_past_month_is_not_counted_after_its_end():
    running = span(D(2026, 2, 27), None)
    assert hours_in([running], D(2026, 2, 1), D(2026, 3, 1), NOW).cpu == pytest.approx(48)


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "one").write_bytes(b"x" * 100)
    (root / "a" / "two").write_bytes(b"x" * 20)
    (root / "a" / "b" / "three").write_bytes(b"x" * 3)
    os.symlink("/etc", root / "link-to-etc")  # not followed; counted as a (tiny) link


@pytest.mark.parametrize("max_files, files, complete", [(100, 4, True), (4, 4, True), (2, 2, False)])
def test_folder_size_stops_at_the_file_limit(tmp_path, max_files, files, complete):
    make_tree(tmp_path)
    size = folder_size(str(tmp_path), max_files)
    assert (size.files, size.complete) == (files, complete)
    if complete:
        assert size.bytes == 123 + len("/etc")
    else:
        assert 0 < size.bytes < 123 + len("/etc")


def test_a_missing_folder_is_at_least_nothing(tmp_path):
    assert folder_size(str(tmp_path / "missing")) == FolderSize(0, 0, False)


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path, quota={"cpu": 4, "memory_gb": 8, "gpus": 2},
                         CacheSettings__user_quota_gb=2.0)


def workload(id, user="ann", state="ended", started=None, ended=None, cpu=1000, gpus=0, model=None,
             kind="debug", host="a1"):
    return Workload(id=id, kind=kind, user=user, name=id, state=state, region="default", host=host,
                    image="labdeck/notebook:latest", cpu_milli=cpu, memory_mb=1024, gpu_model=model,
                    gpu_count=gpus, options={}, created_at=started or NOW, started_at=started, ended_at=ended)


def test_month_usage_on_a_real_platform(platform):
    ann = Requester("ann")
    with platform.db.session() as s:
        s.add_all([
            workload("dbg-00000001", started=D(2026, 3, 1, 0), ended=D(2026, 3, 1, 2), cpu=2000),
            workload("job-00000001", kind="job", started=D(2026, 3, 10, 0), ended=D(2026, 3, 10, 1),
                     gpus=1, model="A100"),
            workload("nb-000000001", kind="notebook", state="running", started=D(2026, 3, 15, 11), cpu=500),
            workload("dbg-00000002", started=D(2026, 2, 1), ended=D(2026, 2, 2)),  # February only
            workload("dbg-00000003", user="bob", started=D(2026, 3, 1), ended=D(2026, 3, 2)),  # someone else's
            Cache(id="cache-00000001", owner="ann", name="c1", region="default", source="~/x", source_key="k1",
                  path="/x", state="ready", bytes_total=GB // 2),
            Cache(id="cache-00000002", owner="ann", name="c2", region="default", source="~/y", source_key="k2",
                  path="/y", state="failed", bytes_total=GB),  # a failed copy holds nothing
        ])
        s.flush()
        s.add(Allocation(workload_id="nb-000000001", user="ann", host="a1", region="default", cpu_milli=500,
                         memory_mb=2048, gpu_count=0))
    storage = platform.paths.user_storage("ann")
    with open(os.path.join(storage, "data.bin"), "wb") as f:
        f.write(b"0" * 5000)

    march = month_usage(platform, ann, "2026-03", now=NOW)
    assert march["month"] == "2026-03" and march["workloads"] == 3
    assert march["cpu_hours"] == pytest.approx(2 * 2 + 1 + 0.5 * 1)
    assert march["gpu_hours"] == {"A100": pytest.approx(1)}
    assert march["storage"] == {"bytes": 5000, "files": 1, "complete": True}
    assert march["cache"] == {"bytes": GB // 2, "caches": 1, "quota_bytes": 2 * GB, "percent": 25.0}
    assert march["holdings"] == {"cpu": {"used": 0.5, "limit": 4, "percent": 12.5},
                                 "memory_gb": {"used": 2, "limit": 8, "percent": 25.0},
                                 "gpus": {"used": 0, "limit": 2, "percent": 0.0}}

    february = month_usage(platform, ann, "2026-02", now=NOW)
    assert (february["cpu_hours"], february["gpu_hours"], february["workloads"]) == (24, {}, 1)
    assert month_usage(platform, Requester("carl"), None, now=NOW)["cpu_hours"] == 0


def test_active_workloads_are_the_users_own_and_not_ended(platform):
    with platform.db.session() as s:
        s.add_all([
            workload("dbg-00000001", state="running", started=D(2026, 3, 1)),
            workload("job-00000001", kind="job", state="queued", host=None),
            workload("job-00000002", kind="job", state="ended", started=D(2026, 3, 1), ended=D(2026, 3, 2)),
            workload("dbg-00000003", user="bob", state="running", started=D(2026, 3, 1)),
            Cache(id="cache-00000001", owner="ann", name="c1", region="east", source="~/x", source_key="k1",
                  path="/x", state="copying", created_at=D(2026, 3, 2)),
            Cache(id="cache-00000002", owner="ann", name="c2", region="east", source="~/y", source_key="k2",
                  path="/y", state="ready", created_at=D(2026, 3, 2)),
        ])
    listed = active_workloads(platform, Requester("ann"))
    assert [(w["id"], w["kind"], w["state"], w["host"]) for w in listed] == [
        ("dbg-00000001", "debug", "running", "a1"),
        ("cache-00000001", "cache", "copying", None),
        ("job-00000001", "job", "queued", None),
    ]
    assert listed[0]["resources"] == {"cpu": 1.0, "memory_gb": 1.0, "gpus": 0, "gpu_model": None}
