"""How large the warm pool grows: bursts of starts it could serve (pure logic, and the query
against the real platform database)."""

from datetime import timedelta

import pytest

from services.models import Workload, utcnow
from spawner.warm_demand import largest_burst, pool_target, recent_bursts
from spawner.warm_pool import WarmPool
from tests.services.platform_fixtures import make_platform


@pytest.mark.parametrize("times, window, burst", [
    ([], 10, 0),
    ([5.0], 10, 1),
    ([0, 1, 2, 3], 10, 4),  # a class starting together
    ([0, 20, 40, 60], 10, 1),  # one after another: the pool refills between them
    ([0, 8, 16, 24, 32, 40], 10, 2),  # a steady stream is no burst, however long
    ([0, 1, 2, 100, 101], 10, 3),  # the largest of two bursts
    ([101, 0, 100, 2, 1], 10, 3),  # in any order
    ([0, 10, 20], 10, 2),  # exactly the window apart still counts
    ([0, 10.5], 10, 1),
    ([0, 4, 9, 13], 10, 3),  # 0, 4, 9 and 4, 9, 13: three at most in any 10 s
])
def test_largest_burst(times, window, burst):
    assert largest_burst(times, window) == burst


@pytest.mark.parametrize("size, grow_to, burst, hosts, target", [
    (2, 16, 0, 1, 2),  # no history: the configured size
    (2, 16, 1, 1, 2),  # fewer at once than the pool holds
    (2, 16, 10, 1, 10),  # ten at once: ten next time
    (2, 16, 40, 1, 16),  # never past grow_to
    (2, 16, 10, 2, 5),  # the region's burst shared among its hosts
    (2, 16, 3, 2, 2),
    (4, 2, 10, 1, 4),  # grow_to not above size: a fixed size
    (0, 16, 10, 1, 0),  # size 0 is the pool off, whatever the demand
])
def test_pool_target(size, grow_to, burst, hosts, target):
    assert pool_target(size, grow_to, burst, hosts) == target


def test_recent_bursts_count_only_starts_the_pool_serves(tmp_path):
    platform = make_platform(tmp_path)
    pool = WarmPool(platform, 8888)
    b = pool.blueprint
    now = utcnow()

    def add(i, seconds_ago, **changes):
        fields = dict(id=f"w{i}", kind="notebook", user=f"u{i}", region="default", image=pool.image,
                      cpu_milli=b.cpu_milli, memory_mb=b.memory_mb, gpu_count=0,
                      created_at=now - timedelta(seconds=seconds_ago))
        session.add(Workload(**{**fields, **changes}))

    with platform.db.session() as session:
        for i in range(5):  # five served ones at once, an hour ago
            add(i, 3600 - i)
        for i in range(5, 9):  # a burst of starts the pool cannot serve
            add(i, 60 - i, **[{"gpu_count": 1}, {"cpu_milli": b.cpu_milli * 2}, {"kind": "job"},
                              {"image": "lab/vision:1"}][i - 5])
        for i in range(9, 12):  # three at once in another region
            add(i, 30 - i, region="east")
        for i in range(12, 20):  # eight at once, but eight days ago
            add(i, 8 * 86400 - i)

    assert recent_bursts(platform, b, pool.image, "notebook", window=10, days=7) == {"default": 5, "east": 3}
    assert recent_bursts(platform, b, pool.image, "notebook", window=10, days=9) == {"default": 8, "east": 3}
    # the pool's targets: the default region's burst of 5 shared by its two hosts, east's 3 on one
    assert pool.targets_for(platform.resources.all_hosts()) == {"a1": 3, "a2": 3, "e1": 3}
    pool.grow_to = 2
    assert pool.targets_for(platform.resources.all_hosts()) == {"a1": 2, "a2": 2, "e1": 2}
