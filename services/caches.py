"""High-speed cache (高速缓存): data sets copied into a region's fast storage, near its GPUs.

A cache task is validated (name, region, source), planned (every file and its size, before
anything is copied, so capacity and quota are checked with the numbers), recorded, and
copied in the background by :mod:`services.cache_runner`. A ready cache appears, read-only,
among the roots of every path-mapping picker of the users who may read it: its owner, and,
once shared, the users and departments it is shared with.

The cache storage of a region is a directory the service writes and the region's hosts
mount at the same path (the local engine's host: simply a local directory).
"""

import base64
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import func, select
from traitlets import Dict, Float, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from . import sharing
from .errors import InUseError, OptionError
from .identity import Requester
from .models import Cache, CacheFile, CacheMember, CacheState, CacheUsage, Workload, WorkloadState, utcnow
from .naming import new_workload_id
from .options import check_region, check_task_name
from .paths import Root

ACTIVE = (CacheState.queued.value, CacheState.copying.value, CacheState.ready.value)
GB = 1024**3


class CacheSettings(LoggingConfigurable):
    """Where caches live per region, how much they may hold, and which sources are allowed."""

    storage = Dict(
        help="""Cache storage per region: {"east": {"path": "/fast/cache", "capacity_gb": 2000}}.
        A region not listed gets <Platform.data_dir>/cache/<region> with default_capacity_gb.""",
    ).tag(config=True)
    default_capacity_gb = Float(100, help="Capacity of a region's cache when storage does not say.").tag(config=True)
    user_quota_gb = Float(50, help="How much cached data one user may own across regions.").tag(config=True)
    group_quota_gb = Dict(help="Per-department quotas {group: GB}; the most generous applies.").tag(config=True)
    allowed_urls = List(
        Unicode(),
        help="""URL prefixes users may cache from, e.g. ["https://data.example.org/datasets/",
        "s3://lab-bucket/"]. http(s) is built in; other schemes need fsspec installed.
        Empty: only paths in the user's storage and shared roots.""",
    ).tag(config=True)
    parallel_tasks = Integer(2, help="Cache tasks copying at once; others wait as 'queued'.").tag(config=True)
    workers = Integer(8, help="Files (or chunks of large files) one task copies at once.").tag(config=True)
    max_rate_mb = Float(0, help="Bandwidth limit of one task in MiB/s, so a copy leaves room for "
                                "running work on the same storage (0: no limit).").tag(config=True)

    def region_storage(self, region: str) -> tuple[Path, float]:
        entry = self.storage.get(region) or {}
        path = entry.get("path") or str(Path(self.parent.data_dir) / "cache" / region)
        return Path(path), float(entry.get("capacity_gb", self.default_capacity_gb))

    def quota_for(self, requester: Requester) -> float:
        quotas = [self.group_quota_gb[g] for g in requester.groups if g in self.group_quota_gb]
        return max([self.user_quota_gb, *quotas])


@dataclass(frozen=True)
class Plan:
    source_kind: str  # path | url
    source_key: str
    files: list  # services.cache_source.SourceFile
    bytes_total: int


class DuplicateCache(OptionError):
    """The source is already cached in the region, in a cache this user may read."""

    def __init__(self, existing: dict):
        self.existing = existing
        super().__init__("source", f"already cached in region '{existing['region']}' as '{existing['name']}' "
                                   f"({existing['id']}); use it, or ask to copy it again")


def store_rel(rel: str) -> str:
    """A file path as the database keeps it: text, or base64 for names that are not UTF-8
    (they come from the file system with surrogate escapes) and for ones that look encoded."""
    raw = rel.encode("utf-8", "surrogateescape")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith("b64:"):
        return "b64:" + base64.b64encode(raw).decode("ascii")
    return text


def load_rel(stored: str) -> str:
    if stored.startswith("b64:"):
        return base64.b64decode(stored[4:]).decode("utf-8", "surrogateescape")
    return stored


def _gb(n: float) -> str:
    return f"{n / GB:.2f}".rstrip("0").rstrip(".") + " GB"


# ---------------------------------------------------------------- sources


def make_source(platform, kind: str, text: str):
    from . import cache_local, cache_sources

    if kind == "path":
        return cache_local.local_source(text)
    if urlsplit(text).scheme in ("http", "https"):
        return cache_sources.http_source(text)
    return cache_sources.fsspec_source(text)


def check_url(settings: CacheSettings, text: str) -> str:
    parts = urlsplit(text)
    allowed = settings.allowed_urls
    if not allowed:
        raise OptionError("source", "URLs are not enabled here; give a path in your storage (~/...) or a shared root")
    schemes = sorted({urlsplit(a).scheme for a in allowed})
    if parts.scheme not in schemes:
        raise OptionError("source", f"the scheme '{parts.scheme}' is not allowed; allowed: {', '.join(schemes)}")
    hosts = sorted({urlsplit(a).netloc for a in allowed if urlsplit(a).scheme == parts.scheme})
    if parts.netloc not in hosts:
        raise OptionError("source", f"the host '{parts.netloc[:80]}' is not allowed; allowed: {', '.join(hosts)}")
    if ".." in parts.path.split("/") or not any(text.startswith(a) for a in allowed):
        raise OptionError("source", f"this URL is not under an allowed prefix: {', '.join(allowed)}")
    return text


def plan(platform, requester: Requester, source) -> Plan:
    """Resolve and list the source (no copying). Local paths go through the path policy."""
    if not isinstance(source, str) or not source.strip():
        raise OptionError("source", "give a directory or file (~/data, a shared root path) or an allowed URL")
    text = source.strip()
    if "://" in text:
        kind, key = "url", check_url(platform.cache_settings, text)
    else:
        real, _root = platform.paths.readable_path(requester, text, "source")
        kind, key = "path", real
    from .cache_source import CopyError

    try:
        files = make_source(platform, kind, key).scan()
    except (CopyError, OSError, ValueError) as e:
        raise OptionError("source", f"cannot be read: {getattr(e, 'reason', None) or e}") from None
    if not files:
        raise OptionError("source", "holds no files to cache")
    return Plan(kind, f"{kind}:{key}", files, sum(f.size for f in files))


# ---------------------------------------------------------------- creation


def check_fits(session, settings: CacheSettings, requester: Requester, region: str, size: int) -> None:
    """Refuse, with the numbers, a cache that would not fit the region or the user's quota."""
    path, capacity_gb = settings.region_storage(region)
    used = session.scalar(select(func.coalesce(func.sum(Cache.bytes_total), 0))
                          .where(Cache.region == region, Cache.state.in_(ACTIVE))) or 0
    if used + size > capacity_gb * GB:
        raise OptionError("source", f"{_gb(size)} does not fit in the cache of region '{region}': "
                                    f"{_gb(used)} of {capacity_gb:g} GB are already used")
    mine = session.scalar(select(func.coalesce(func.sum(Cache.bytes_total), 0))
                          .where(Cache.owner == requester.name, Cache.state.in_(ACTIVE))) or 0
    quota = settings.quota_for(requester)
    if mine + size > quota * GB:
        raise OptionError("source", f"{_gb(size)} would exceed your cache quota of {quota:g} GB "
                                    f"({_gb(mine)} already in your caches)")


def create(platform, requester: Requester, raw, *, copy_anyway: bool = False) -> str:
    """Validate, plan and record a cache task (state queued). Returns its ID. Blocking: run in a thread."""
    if not isinstance(raw, dict):
        raise OptionError("cache", "must be an object with name, region, source and description")
    allowed = {"name", "region", "source", "description", "copy_anyway"}
    for key in raw:
        if key not in allowed:
            raise OptionError(str(key)[:40], f"unknown option; allowed: {', '.join(sorted(allowed))}")
    name = check_task_name(raw.get("name"))
    region = check_region(platform.resources, raw.get("region"))
    description = raw.get("description") or ""
    if not isinstance(description, str) or len(description) > 500:
        raise OptionError("description", "must be text of at most 500 characters")
    planned = plan(platform, requester, raw.get("source"))
    settings = platform.cache_settings
    cache_id = new_workload_id("cache")
    storage, _capacity = settings.region_storage(region)
    with platform.db.write_transaction() as s:
        if not copy_anyway:
            existing = _existing(s, requester, region, planned.source_key)
            if existing is not None:
                raise DuplicateCache(cache_view(existing, requester))
        check_fits(s, settings, requester, region, planned.bytes_total)
        s.add(Cache(id=cache_id, owner=requester.name, name=name, description=description.strip(),
                    region=region, source=raw["source"].strip(), source_key=planned.source_key,
                    path=str(storage / cache_id), bytes_total=planned.bytes_total, files_total=len(planned.files)))
        s.flush()
        s.add_all(CacheFile(cache_id=cache_id, rel=store_rel(f.rel), size=f.size,
                            checksum_algo=f.checksum[0] if f.checksum else None,
                            checksum=f.checksum[1] if f.checksum else None) for f in planned.files)
    return cache_id


def _existing(session, requester: Requester, region: str, key: str) -> Cache | None:
    for cache in session.scalars(select(Cache).where(Cache.region == region, Cache.source_key == key,
                                                     Cache.state.in_(ACTIVE)).order_by(Cache.created_at)):
        if may_read(session, cache, requester):
            return cache
    return None


# ---------------------------------------------------------------- who may see what


def members_of(session, cache_id: str) -> list[CacheMember]:
    return list(session.scalars(select(CacheMember).where(CacheMember.cache_id == cache_id)
                                .order_by(CacheMember.kind, CacheMember.name)))


def may_read(session, cache: Cache, requester: Requester) -> bool:
    """Owner and admins always; once shared, its member users and departments."""
    if requester.admin or cache.owner == requester.name:
        return True
    return _member(session, cache, requester)


def readable_roots(platform, requester: Requester) -> list[Root]:
    """Ready caches this user may mount (read-only), as path-policy roots: their own and the
    ones shared with them or their departments (admins manage others' caches, not mount them)."""
    with platform.db.session() as s:
        caches = s.scalars(select(Cache).where(Cache.state == CacheState.ready.value).order_by(Cache.name))
        return [Root(f"cache:{c.id}", str(Path(c.path).resolve()), True, f"Cache: {c.name} ({c.region})")
                for c in caches if c.owner == requester.name or _member(s, c, requester)]


def _member(session, cache: Cache, requester: Requester) -> bool:
    return cache.shared and sharing.includes(members_of(session, cache.id), requester)


# ---------------------------------------------------------------- reading


def cache_view(cache: Cache, requester: Requester | None = None) -> dict:
    percent = 100.0 if cache.bytes_total == 0 and cache.state == CacheState.ready.value else (
        round(100 * cache.bytes_done / cache.bytes_total, 1) if cache.bytes_total else 0.0)
    left = cache.bytes_total - cache.bytes_done
    eta = round(left / cache.rate_bps) if cache.state == CacheState.copying.value and cache.rate_bps > 0 else None
    return {
        "id": cache.id, "name": cache.name, "owner": cache.owner, "description": cache.description,
        "region": cache.region, "source": cache.source, "state": cache.state, "error": cache.error,
        "shared": cache.shared, "size_bytes": cache.bytes_total,
        "progress": {"bytes_done": cache.bytes_done, "bytes_total": cache.bytes_total,
                     "files_done": cache.files_done, "files_total": cache.files_total,
                     "percent": percent, "rate_bps": round(cache.rate_bps), "seconds_left": eta},
        "created_at": cache.created_at, "started_at": cache.started_at, "finished_at": cache.finished_at,
        "last_used_at": cache.last_used_at, "mine": requester is not None and cache.owner == requester.name,
    }


def get_cache(platform, requester: Requester, cache_id: str, detail: bool = False) -> dict | None:
    """The cache if this user may see it (else None: 404), with members and usage for its owner."""
    with platform.db.session() as s:
        cache = s.get(Cache, cache_id)
        if cache is None or not may_read(s, cache, requester):
            return None
        view = cache_view(cache, requester)
        if detail and (requester.admin or cache.owner == requester.name):
            view["members"] = [{"kind": m.kind, "name": m.name} for m in members_of(s, cache_id)]
            view["usage"] = usage_of(s, cache_id)
        return view


def list_caches(platform, requester: Requester) -> dict:
    """My private caches; shared ones (mine, and shared with me or my departments); and the
    ones shared with my departments."""
    with platform.db.session() as s:
        private, shared, department = [], [], []
        for cache in s.scalars(select(Cache).order_by(Cache.created_at.desc())):
            mine = cache.owner == requester.name
            if mine and not cache.shared:
                private.append(cache_view(cache, requester))
                continue
            if not cache.shared:
                continue
            members = members_of(s, cache.id)
            with_me = sharing.shares_with_user(members, requester)
            with_dept = sharing.shares_with_department(members, requester)
            if mine or with_me or with_dept:
                shared.append(cache_view(cache, requester))
            if with_dept:
                department.append(cache_view(cache, requester))
        return {"private": private, "shared": shared, "department": department}


def usage_of(session, cache_id: str) -> list[dict]:
    """Every workload that mounted the cache: who, when, how often, last used."""
    rows = session.execute(select(CacheUsage, Workload.state, Workload.name).outerjoin(
        Workload, Workload.id == CacheUsage.workload_id).where(CacheUsage.cache_id == cache_id)
        .order_by(CacheUsage.mounted_at.desc()))
    out = []
    counts: dict[str, int] = {}
    for usage, state, _name in rows:
        counts[usage.user] = counts.get(usage.user, 0) + 1
        out.append({"workload": usage.workload_id, "kind": usage.kind, "user": usage.user,
                    "mounted_at": usage.mounted_at, "running": state not in (None, WorkloadState.ended.value)})
    for entry in out:
        entry["times_by_user"] = counts[entry["user"]]
    return out


# ---------------------------------------------------------------- changes


def _own(session, requester: Requester, cache_id: str) -> Cache:
    cache = session.get(Cache, cache_id)
    if cache is None or not (requester.admin or cache.owner == requester.name):
        raise LookupError(cache_id)
    return cache


def share(platform, requester: Requester, cache_id: str) -> None:
    """Turn a private cache into a shared one (members are added separately)."""
    with platform.db.session() as s:
        _own(s, requester, cache_id).shared = True


def change_members(platform, requester: Requester, cache_id: str, add=(), remove=()) -> list[dict]:
    add, remove = sharing.parse_changes(add, remove)
    with platform.db.session() as s:
        cache = _own(s, requester, cache_id)
        if not cache.shared and add:
            raise OptionError("add", "share the cache first; then add members")
        members = sharing.apply_changes(s, members_of(s, cache_id), add, remove,
                                        lambda m: CacheMember(cache_id=cache_id, kind=m.kind, name=m.name))
        return [m.as_dict() for m in members]


def in_use_by(session, cache_id: str) -> list[str]:
    rows = session.execute(select(CacheUsage.workload_id).join(Workload, Workload.id == CacheUsage.workload_id)
                           .where(CacheUsage.cache_id == cache_id,
                                  Workload.state != WorkloadState.ended.value).distinct())
    return sorted(w for (w,) in rows)


def delete(platform, requester: Requester, cache_id: str) -> Path:
    """Remove the record (refused while a running workload mounts it); returns the folder to remove."""
    with platform.db.session() as s:
        cache = _own(s, requester, cache_id)
        busy = in_use_by(s, cache_id)
        if busy:
            raise InUseError("cache", f"in use by running workloads: {', '.join(busy)}; end them first", busy)
        if cache.state in (CacheState.queued.value, CacheState.copying.value):
            raise OptionError("cache", "still copying; cancel it first")
        folder = Path(cache.path)
        s.delete(cache)
    return folder


def record_usage(platform, workload_id: str, user: str, kind: str, mounts) -> None:
    """Remember which caches a workload mounted (its usage, and 'last used')."""
    cache_ids = [m.root.split(":", 1)[1] for m in mounts if m.root.startswith("cache:")]
    if not cache_ids:
        return
    now = utcnow()
    with platform.db.session() as s:
        for cache_id in cache_ids:
            s.add(CacheUsage(cache_id=cache_id, workload_id=workload_id, user=user, kind=kind, mounted_at=now))
            cache = s.get(Cache, cache_id)
            if cache is not None:
                cache.last_used_at = now


def region_usage(platform) -> list[dict]:
    """Per region: capacity and what caches use, for the form."""
    settings = platform.cache_settings
    with platform.db.session() as s:
        rows = dict(s.execute(select(Cache.region, func.sum(Cache.bytes_total))
                              .where(Cache.state.in_(ACTIVE)).group_by(Cache.region)).all())
    out = []
    for region in platform.resources.regions():
        _path, capacity = settings.region_storage(region)
        used = rows.get(region) or 0
        out.append({"region": region, "title": platform.resources.region_title(region),
                    "capacity_gb": capacity, "used_gb": round(used / GB, 2)})
    return out


class CacheAccess:
    """What the rest of the platform asks of caches (the path policy: roots to mount)."""

    def __init__(self, platform):
        self.platform = platform

    def readable_roots(self, requester: Requester) -> list[Root]:
        return readable_roots(self.platform, requester)
