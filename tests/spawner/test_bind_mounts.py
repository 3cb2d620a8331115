"""The mount table as the warm pool reads it (pure parsing; no mounting here)."""

import pytest

from spawner.bind_mounts import MountInfo, mount_holding, parse_mountinfo

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
