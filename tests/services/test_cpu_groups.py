"""CPU weight groups on fake cgroup file systems, v1 and v2 (the real one: tests/spawner/test_cpu_weight.py)."""

import os
import threading
from pathlib import Path

import pytest

from services.cpu_groups import BACKGROUND_NICE, CpuGroups, in_the_background


def cgroup_fs(tmp_path, layout: str) -> Path:
    root = tmp_path / "cgroup"
    if layout == "v1":  # one hierarchy per controller
        (root / "cpu").mkdir(parents=True)
        (root / "cpu" / "cpu.shares").write_text("1024\n")
    elif layout == "v2":  # unified
        root.mkdir()
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (root / "cgroup.subtree_control").write_text("memory pids\n")
    else:
        root.mkdir()
    return root


@pytest.mark.parametrize("layout, group_dir, weight_file, weight", [
    ("v1", "cpu/labdeck-platform", "cpu.shares", "8192"),
    ("v2", "labdeck-platform", "cpu.weight", "800"),
])
def test_the_hub_joins_the_platform_group_at_its_weight(tmp_path, layout, group_dir, weight_file, weight):
    root = cgroup_fs(tmp_path, layout)
    assert CpuGroups(cgroup_root=str(root)).join_platform_group(4242)
    group = root / group_dir
    assert (group / weight_file).read_text() == weight
    assert (group / "cgroup.procs").read_text() == "4242"
    if layout == "v2":  # the cpu controller had to be enabled for the root's children
        assert (root / "cgroup.subtree_control").read_text() == "+cpu"


@pytest.mark.parametrize("shares, v2_weight", [(8192, "800"), (1024, "100"), (256, "25"), (2, "1"), (262144, "10000")])
def test_v2_weight_keeps_the_v1_ratio(tmp_path, shares, v2_weight):
    root = cgroup_fs(tmp_path, "v2")
    CpuGroups(cgroup_root=str(root), shares=shares).prepare("g")
    assert (root / "g" / "cpu.weight").read_text() == v2_weight


@pytest.mark.parametrize("layout, driver, parent", [
    ("v1", "cgroupfs", "/labdeck-interactive"),
    ("v2", "cgroupfs", "/labdeck-interactive"),
    ("v1", "systemd", ""),  # systemd's driver takes only "*.slice" parents
    ("none", "cgroupfs", ""),  # no cgroup file system
])
def test_servers_get_the_interactive_group_only_where_the_engine_allows(tmp_path, layout, driver, parent):
    groups = CpuGroups(cgroup_root=str(cgroup_fs(tmp_path, layout)))
    assert groups.interactive_parent() == ""  # not prepared yet
    assert groups.prepare_interactive(driver) == parent
    assert groups.interactive_parent() == parent


def test_a_group_that_cannot_be_made_is_reported_and_left_alone(tmp_path, caplog):
    root = cgroup_fs(tmp_path, "v1")
    (root / "cpu" / "labdeck-platform").write_text("not a folder")
    groups = CpuGroups(cgroup_root=str(root))
    assert not groups.join_platform_group(4242)
    assert "cannot prepare cgroup" in caplog.text and "default weight" in caplog.text
    assert (root / "cpu" / "labdeck-platform").read_text() == "not a folder"


def test_empty_group_names_turn_it_off(tmp_path):
    root = cgroup_fs(tmp_path, "v1")
    groups = CpuGroups(cgroup_root=str(root), platform_group="", interactive_group="")
    assert not groups.join_platform_group(4242)
    assert groups.prepare_interactive("cgroupfs") == "" and groups.interactive_parent() == ""
    assert sorted(p.name for p in (root / "cpu").iterdir()) == ["cpu.shares"]


def test_background_work_lowers_only_its_own_threads_weight():
    seen = {}

    def work():
        in_the_background()
        seen["worker"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen["worker"] == max(before, BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller's thread keeps its own

