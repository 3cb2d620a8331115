"""How many warm servers a host's pool should keep: its configured size, or more when more
people than that started at once (a class starting together) within the last days.

A burst is the starts the pool could have served that fall within ``window`` seconds of each
other: more than the pool can replace in that time. A steady stream of starts, however long,
is served by a pool of the configured size, which refills between them. Demand is read from
the workloads table, so it survives hub restarts and needs no state of its own.
"""

import math
from datetime import timedelta

from sqlalchemy import select

from services.models import Workload, utcnow


def largest_burst(times: list[float], window: float) -> int:
    """The most of ``times`` (seconds) within any ``window`` seconds."""
    times = sorted(times)
    largest, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > window:
            first += 1
        largest = max(largest, last - first + 1)
    return largest


def pool_target(size: int, grow_to: int, burst: int, hosts_in_region: int) -> int:
    """Warm servers to keep on one host: ``size``, grown to its share of the region's largest
    burst, but never past ``grow_to`` (at most ``size`` when grow_to is not above it)."""
    if size <= 0:
        return 0
    share = math.ceil(burst / max(1, hosts_in_region))
    return max(size, min(grow_to, share))


def recent_bursts(platform, blueprint, image: str, kind: str, window: float, days: float) -> dict[str, int]:
    """Per region: the largest burst of starts the pool serves (its image, CPU and memory, no
    GPU) opened within the last ``days``."""
    since = utcnow() - timedelta(days=days)
    with platform.db.session() as session:
        rows = session.execute(select(Workload.region, Workload.created_at).where(
            Workload.kind == kind, Workload.image == image, Workload.gpu_count == 0,
            Workload.cpu_milli == blueprint.cpu_milli, Workload.memory_mb == blueprint.memory_mb,
            Workload.created_at >= since)).all()
    times: dict[str, list[float]] = {}
    for region, created in rows:
        times.setdefault(region, []).append(created.timestamp())
    return {region: largest_burst(ts, window) for region, ts in times.items()}
