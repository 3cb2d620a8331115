"""A user's own usage, for the personal centre: compute used in a calendar month, what they
hold and store now against their quotas, and what they have running.

Months are calendar months in UTC. CPU-hours are cores × hours and GPU-hours GPUs × hours of
every workload (notebook, debug session, job) that ran in the month, counting only the part
inside it; a workload still running counts up to now. Storage, caches and holdings are as of now.
"""

import os
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from .caches import ACTIVE as CACHE_ACTIVE
from .caches import GB
from .errors import OptionError
from .identity import Requester
from .models import Cache, CacheState, Workload, WorkloadState, utcnow

# a storage folder with more files than this is reported as "at least" what was counted,
# so one user's million small files cannot make the page slow
MAX_FILES = 100_000
NO_MODEL = "unspecified"  # GPU-hours of a workload that named no model
_MONTH = re.compile(r"(\d{4})-(\d{2})")


# ---------------------------------------------------------------- pure parts


def month_bounds(text: str | None, now: datetime | None = None) -> tuple[datetime, datetime]:
    """[start, end) of the month ``YYYY-MM`` (this month when empty), naive UTC."""
    now = now or utcnow()
    if not text:
        year, month = now.year, now.month
    else:
        match = _MONTH.fullmatch(text.strip())
        if not match or not 1 <= int(match.group(2)) <= 12 or not 1970 <= int(match.group(1)) <= 9998:
            raise OptionError("month", f"give a month as YYYY-MM, such as {now:%Y-%m}")
        year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1)
    end = datetime(year + month // 12, month % 12 + 1, 1)
    return start, end


@dataclass(frozen=True)
class Span:
    """What the hours need of one workload."""

    cpu_milli: int
    gpu_count: int
    gpu_model: str | None
    started_at: datetime | None
    ended_at: datetime | None  # None: still running


def overlap_hours(started: datetime, ended: datetime, start: datetime, end: datetime) -> float:
    """Hours of [started, ended) that lie in [start, end)."""
    seconds = (min(ended, end) - max(started, start)).total_seconds()
    return max(seconds, 0.0) / 3600


@dataclass(frozen=True)
class Hours:
    cpu: float
    gpu: dict[str, float]  # by GPU model
    workloads: int  # how many ran in the period


def hours_in(spans, start: datetime, end: datetime, now: datetime) -> Hours:
    """CPU-hours and GPU-hours by model of ``spans`` within [start, end), none after ``now``."""
    cpu_hours, gpu_hours, counted = 0.0, {}, 0
    for span in spans:
        if span.started_at is None:
            continue  # never ran (queued, or failed before starting)
        hours = overlap_hours(span.started_at, min(span.ended_at or now, now), start, end)
        if hours <= 0:
            continue
        counted += 1
        cpu_hours += span.cpu_milli / 1000 * hours
        if span.gpu_count:
            model = span.gpu_model or NO_MODEL
            gpu_hours[model] = gpu_hours.get(model, 0.0) + span.gpu_count * hours
    return Hours(cpu_hours, dict(sorted(gpu_hours.items())), counted)


@dataclass(frozen=True)
class FolderSize:
    bytes: int
    files: int
    complete: bool  # False: stopped at the file limit or a folder was unreadable ("at least")


def folder_size(path: str, max_files: int = MAX_FILES) -> FolderSize:
    """Bytes of the files under ``path`` (symbolic links not followed). Blocking: run in a thread."""
    total = files = 0
    complete = True
    stack = [path]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            complete = False
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    complete = False
                    continue
                if files >= max_files:
                    return FolderSize(total, files, False)
                total += size
                files += 1
    return FolderSize(total, files, complete)


def _share(used: float, limit: float) -> dict:
    return {"used": round(used, 3), "limit": round(limit, 3),
            "percent": round(min(100.0, 100 * used / limit), 1) if limit > 0 else (100.0 if used else 0.0)}


# ---------------------------------------------------------------- with the platform


def _span(w: Workload) -> Span:
    ended = w.ended_at
    if ended is None and w.state == WorkloadState.ended.value:
        ended = w.started_at  # an end without a time: count nothing rather than forever
    return Span(w.cpu_milli, w.gpu_count or 0, w.gpu_model, w.started_at, ended)


def month_usage(platform, requester: Requester, month: str | None = None, now: datetime | None = None,
                max_files: int = MAX_FILES) -> dict:
    """The user's usage for a month and their holdings now. Blocking (database, storage walk)."""
    now = now or utcnow()
    start, end = month_bounds(month, now)
    with platform.db.session() as s:
        workloads = list(s.scalars(select(Workload).where(
            Workload.user == requester.name, Workload.started_at.is_not(None), Workload.started_at < end,
            or_(Workload.ended_at.is_(None), Workload.ended_at > start))))
        spans = [_span(w) for w in workloads]
        cpu_milli, memory_mb, gpus = platform.ledger.user_usage(s, requester.name)
        cache_bytes, cache_count = s.execute(
            select(func.coalesce(func.sum(Cache.bytes_total), 0), func.count(Cache.id))
            .where(Cache.owner == requester.name, Cache.state.in_(CACHE_ACTIVE))).one()
    hours = hours_in(spans, start, end, now)
    storage = folder_size(platform.paths.user_storage(requester.name), max_files)
    limits = platform.quotas.limits_for(requester)
    cache_quota = platform.cache_settings.quota_for(requester) * GB
    return {
        "month": f"{start:%Y-%m}", "from": start, "to": end, "as_of": now,
        "cpu_hours": round(hours.cpu, 6),
        "gpu_hours": {model: round(h, 6) for model, h in hours.gpu.items()},
        "workloads": hours.workloads,
        "storage": {"bytes": storage.bytes, "files": storage.files, "complete": storage.complete},
        "cache": {"bytes": int(cache_bytes or 0), "caches": int(cache_count or 0), "quota_bytes": int(cache_quota),
                  "percent": _share(cache_bytes or 0, cache_quota)["percent"]},
        "holdings": {
            "cpu": _share(cpu_milli / 1000, limits.cpu),
            "memory_gb": _share(memory_mb / 1024, limits.memory_gb),
            "gpus": _share(gpus, limits.gpus),
        },
    }


ACTIVE_STATES = (WorkloadState.queued.value, WorkloadState.starting.value, WorkloadState.running.value)


def active_workloads(platform, requester: Requester) -> list[dict]:
    """The user's workloads not ended (notebooks, debug sessions, jobs) and cache tasks still
    queued or copying, oldest first. Blocking."""
    out = []
    with platform.db.session() as s:
        for w in s.scalars(select(Workload).where(Workload.user == requester.name,
                                                  Workload.state.in_(ACTIVE_STATES))):
            out.append({
                "id": w.id, "kind": w.kind, "name": w.name, "state": w.state, "host": w.host,
                "region": w.region, "created_at": w.created_at, "started_at": w.started_at,
                "resources": {"cpu": w.cpu_milli / 1000, "memory_gb": round(w.memory_mb / 1024, 3),
                              "gpus": w.gpu_count or 0, "gpu_model": w.gpu_model},
            })
        for c in s.scalars(select(Cache).where(
                Cache.owner == requester.name,
                Cache.state.in_((CacheState.queued.value, CacheState.copying.value)))):
            out.append({
                "id": c.id, "kind": "cache", "name": c.name, "state": c.state, "host": None,
                "region": c.region, "created_at": c.created_at, "started_at": c.started_at, "resources": None,
            })
    out.sort(key=lambda item: (item["created_at"], item["id"]))
    return out
