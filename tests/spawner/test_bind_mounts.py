"""The warm pool's mounts: the mount table as it reads it, and binding a folder without links."""

import os

import pytest

from spawner.bind_mounts import (
    MountInfo, bind, is_mount_point, mount_holding, open_without_links, parse_mountinfo, unbind,
)

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 27 254:0 /srv/pool /srv/pool rw,relatime - ext4 /dev/vda rw
31 30 254:0 /srv/pool /srv/pool rw,relatime shared:7 - ext4 /dev/vda rw
32 31 254:0 /home/al /srv/pool/slots/nb-1 rw,relatime shared:7 master:3 - ext4 /dev/vda rw
33 27 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
garbage line
"""


def test_parse_mountinfo_reads_mount_points_and_sharing():
    assert parse_mountinfo(MOUNTINFO) == [
        MountInfo("/proc", False),
        MountInfo("/", True),
        MountInfo("/srv/pool", False),
        MountInfo("/srv/pool", True),
        MountInfo("/srv/pool/slots/nb-1", True),
        MountInfo("/mnt/with space", False),
    ]


@pytest.mark.parametrize("path, mount_point, shared", [
    ("/", "/", True),
    ("/home/al/work", "/", True),
    ("/proc/1", "/proc", False),
    ("/procfs", "/", True),  # a prefix of the name is not a parent folder
    ("/srv/pool", "/srv/pool", True),  # the later of two mounts on one point covers the earlier
    ("/srv/pool/slots", "/srv/pool", True),
    ("/srv/pool/slots/nb-1/x", "/srv/pool/slots/nb-1", True),
    ("/mnt/with space/a", "/mnt/with space", False),
])
def test_mount_holding_is_the_innermost_latest_mount(path, mount_point, shared):
    assert mount_holding(path, parse_mountinfo(MOUNTINFO)) == MountInfo(mount_point, shared)


def test_open_without_links_refuses_a_link_anywhere_in_the_path(tmp_path):
    (tmp_path / "storage" / "al" / "project").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "storage" / "al" / "swapped").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "storage" / "linked-user").symlink_to(tmp_path / "storage" / "al")
    fd = open_without_links(str(tmp_path / "storage" / "al" / "project"))
    try:
        assert os.path.samestat(os.fstat(fd), os.stat(tmp_path / "storage" / "al" / "project"))
    finally:
        os.close(fd)
    for path in ("storage/al/swapped", "storage/linked-user/project", "storage/al/missing"):
        with pytest.raises(OSError):
            open_without_links(str(tmp_path / path))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_bind_shows_the_folder_and_unbind_takes_it_away(tmp_path):
    source, target = tmp_path / "home", tmp_path / "slot"
    source.mkdir()
    target.mkdir()
    (source / "notes.txt").write_text("mine")
    bind(str(source), str(target))
    try:
        assert (target / "notes.txt").read_text() == "mine"
        assert is_mount_point(str(target))
    finally:
        unbind(str(target))
    assert not (target / "notes.txt").exists() and not is_mount_point(str(target))
    assert (source / "notes.txt").read_text() == "mine"
