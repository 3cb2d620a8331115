"""Maintained hosts: adding a Docker host from the admin page (probed first), refreshing every
host's state and capacity, draining, removing; and the rules that keep new work off a host that
is draining or under maintenance.

Hosts from ``c.Resources.hosts`` stay defined there; the ``hosts`` table holds the hosts admins
added and, for every host, its drain flag and last probe. :class:`services.resources.Resources`
merges both and reloads when the table changes, in the hub and in the service alike.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from docker.errors import DockerException
from sqlalchemy import select

from .docker_pool import make_client
from .errors import InUseError, OptionError
from .models import Allocation, HostRecord, MaintenanceWindow, Workload, WorkloadState, utcnow
from .resources import parse_gpu_inventory

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
REGION_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RESERVED_NAMES = {"refresh", "workloads"}  # words of the admin API's paths
PROBE_TIMEOUT = 5  # seconds: an admin waits on the form for this at most


class ProbeError(Exception):
    """The endpoint did not answer as a Docker engine; the message says why."""


@dataclass(frozen=True)
class Probe:
    cpus: float
    memory_mb: int
    engine: str  # "Docker 20.10.24 on host-name"


def probe(docker_url: str, tls: dict | None = None, timeout: int = PROBE_TIMEOUT) -> Probe:
    """Ask the endpoint for its engine's facts (blocking: run it in a thread)."""
    try:
        client = make_client(docker_url, tls, timeout=timeout)
        try:
            info = client.info()
        finally:
            client.close()
    except DockerException as e:
        raise ProbeError(_reason(e)) from None
    except OSError as e:
        raise ProbeError(e.strerror or str(e)) from None
    return Probe(cpus=float(info.get("NCPU") or 0), memory_mb=int(info.get("MemTotal") or 0) // 2**20,
                 engine=f"Docker {info.get('ServerVersion', '?')} on {info.get('Name', '?')}")


def _reason(error: Exception) -> str:
    """The useful part of docker-py's wrapped errors (connection refused, no such file, TLS)."""
    text = str(getattr(error, "explanation", None) or error)
    for marker in ("Connection refused", "No such file or directory", "timed out", "Name or service not known",
                   "certificate verify failed", "Permission denied"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return text[:300]


# ---------------------------------------------------------------- adding


@dataclass(frozen=True)
class HostSpec:
    name: str
    region: str
    docker_url: str
    tls: dict | None
    address: str | None
    gpus: dict | None


def check_host_form(raw: dict, existing: set[str]) -> HostSpec:
    """Validate the add-host form; OptionError names the field and what is allowed."""
    name = str(raw.get("name") or "").strip()
    if not NAME_RE.fullmatch(name):
        raise OptionError("name", "use 1-63 lowercase letters, digits and '-', starting with a letter or digit")
    if name in existing:
        raise OptionError("name", f"a host named '{name}' exists already")
    if name in RESERVED_NAMES:
        raise OptionError("name", f"'{name}' is reserved; choose another name")
    region = str(raw.get("region") or "").strip()
    if not REGION_RE.fullmatch(region):
        raise OptionError("region", "use 1-63 lowercase letters, digits, '-' and '_'")
    url = str(raw.get("docker_url") or "").strip()
    tls = None
    if url.startswith("unix://"):
        if not url[len("unix://"):].startswith("/"):
            raise OptionError("docker_url", "a local socket is unix:///absolute/path/docker.sock")
    elif url.startswith("tcp://"):
        if not re.fullmatch(r"tcp://[A-Za-z0-9.\-\[\]:]+:\d{1,5}", url):
            raise OptionError("docker_url", "a remote engine is tcp://HOST:PORT (2376 with TLS)")
        files = {k: str(raw.get(f"tls_{k}") or "").strip() for k in ("ca", "cert", "key")}
        if any(files.values()):
            for key, path in files.items():
                if not path:
                    raise OptionError(f"tls_{key}", "give all three TLS files (CA, certificate, key) or none")
                if not Path(path).is_absolute() or not Path(path).is_file():
                    raise OptionError(f"tls_{key}", f"'{path[:200]}' is not a readable file on the platform's machine")
            tls = files
    else:
        raise OptionError("docker_url", "use unix:///path/to/docker.sock or tcp://HOST:PORT")
    address = str(raw.get("address") or "").strip() or None
    if address and not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]{1,255}", address):
        raise OptionError("address", "an IP address or host name where the host's published ports are reached")
    gpus = None
    text = str(raw.get("gpus") or "").strip()
    if text:
        try:
            gpus = parse_gpu_inventory(text)
        except ValueError as e:
            raise OptionError("gpus", str(e)) from None
    return HostSpec(name, region, url, tls, address, gpus)


def add_host(platform, admin: str, raw: dict) -> dict:
    """Validate, probe, record. Refused (OptionError naming docker_url) if the engine does not answer."""
    existing = {h.name for h in platform.resources.all_hosts()}
    spec = check_host_form(raw, existing)
    try:
        found = probe(spec.docker_url, spec.tls)
    except ProbeError as e:
        raise OptionError("docker_url", f"{spec.docker_url} does not answer as a Docker engine: {e}") from None
    now = utcnow()
    with platform.db.session() as s:
        if s.get(HostRecord, spec.name) is not None:
            raise OptionError("name", f"a host named '{spec.name}' exists already")
        s.add(HostRecord(name=spec.name, origin="added", region=spec.region, docker_url=spec.docker_url,
                         tls=spec.tls, address=spec.address, gpus=spec.gpus, cpus=found.cpus,
                         memory_mb=found.memory_mb, reachable=True, probed_at=now, added_by=admin,
                         updated_at=now))
    platform.resources.invalidate()
    return {"name": spec.name, "engine": found.engine, "cpus": found.cpus, "memory_mb": found.memory_mb}


# ---------------------------------------------------------------- refresh, drain, remove


def _record_for(session, host) -> HostRecord:
    record = session.get(HostRecord, host.name)
    if record is None:  # a config host's first record
        record = HostRecord(name=host.name, origin="config", region=host.region, docker_url=host.docker_url)
        session.add(record)
    return record


def refresh(platform) -> list[dict]:
    """Probe every host; record whether it answers and, for added hosts, its capacity."""
    results = []
    for host in platform.resources.all_hosts():
        try:
            found, error = probe(host.docker_url, host.tls), None
        except ProbeError as e:
            found, error = None, str(e)
        with platform.db.session() as s:
            record = _record_for(s, host)
            record.reachable, record.probe_error, record.probed_at = found is not None, error, utcnow()
            if found is not None and record.origin == "added":
                record.cpus, record.memory_mb = found.cpus, found.memory_mb
            record.updated_at = utcnow()
        results.append({"name": host.name, "reachable": found is not None, "error": error})
    platform.resources.invalidate()
    return results


def set_drained(platform, name: str, drained: bool) -> None:
    host = _known(platform, name)
    with platform.db.session() as s:
        record = _record_for(s, host)
        record.drained, record.updated_at = drained, utcnow()
    platform.resources.invalidate()


def running_on(session, host: str) -> list[Workload]:
    return list(session.scalars(select(Workload).where(Workload.host == host,
                                                       Workload.state != WorkloadState.ended.value)
                                .order_by(Workload.created_at)))


def remove_host(platform, name: str) -> None:
    _known(platform, name)  # LookupError (404) for an unknown host
    with platform.db.session() as s:
        record = s.get(HostRecord, name)
        if record is None or record.origin != "added":
            raise OptionError("host", f"{name} is defined in jupyterhub_config.py (Resources.hosts); remove it there")
        busy = [w.id for w in running_on(s, name)]
        if busy:
            raise InUseError("host", f"{name} still runs {', '.join(busy)}; drain it and wait until they end", busy)
        s.delete(record)
    platform.resources.invalidate()


def _known(platform, name: str):
    try:
        return platform.resources.host(name)
    except KeyError:
        raise LookupError(name) from None


# ---------------------------------------------------------------- placement rules


def closed_hosts(session, host_names: list[str], now: datetime, time_limit_s: int | None) -> dict[str, str]:
    """Hosts that take no new workload now, with why: a maintenance window under way, or one
    ahead that a workload of this time limit (none: open-ended) would run into."""
    closed = {}
    windows = session.scalars(select(MaintenanceWindow).where(MaintenanceWindow.host.in_(host_names),
                                                              MaintenanceWindow.ends_at > now)
                              .order_by(MaintenanceWindow.starts_at))
    for w in windows:
        if w.host in closed:
            continue
        if w.starts_at <= now:
            closed[w.host] = f"{w.host} is in maintenance until {w.ends_at:%Y-%m-%d %H:%M} UTC"
        elif time_limit_s is None or now + timedelta(seconds=time_limit_s) > w.starts_at:
            limit = "has no time limit" if time_limit_s is None else "would still run"
            closed[w.host] = (f"{w.host} has maintenance from {w.starts_at:%Y-%m-%d %H:%M} UTC, "
                              f"and this workload {limit} then")
    return closed


# ---------------------------------------------------------------- reading


def host_state(host, windows: list[MaintenanceWindow], now: datetime) -> str:
    if not host.online:
        return "unreachable"
    if any(w.starts_at <= now < w.ends_at for w in windows):
        return "in maintenance"
    if host.drained:
        return "draining"
    return "online"


def host_rows(platform) -> list[dict]:
    """The admin list: every host with its state, capacity in use and running workloads."""
    now = utcnow()
    with platform.db.session() as s:
        held = {}
        for a in s.scalars(select(Allocation)):
            h = held.setdefault(a.host, {"cpu_milli": 0, "memory_mb": 0, "gpus": {}})
            h["cpu_milli"] += a.cpu_milli
            h["memory_mb"] += a.memory_mb
            if a.gpu_model:
                h["gpus"][a.gpu_model] = h["gpus"].get(a.gpu_model, 0) + a.gpu_count
        counts = {}
        for (host,) in s.execute(select(Workload.host).where(Workload.state != WorkloadState.ended.value)):
            counts[host] = counts.get(host, 0) + 1
        windows = list(s.scalars(select(MaintenanceWindow).where(MaintenanceWindow.ends_at > now)
                                 .order_by(MaintenanceWindow.starts_at)))
        records = {r.name: r for r in s.scalars(select(HostRecord))}
    rows = []
    for host in platform.resources.all_hosts():
        use = held.get(host.name, {"cpu_milli": 0, "memory_mb": 0, "gpus": {}})
        mine = [w for w in windows if w.host == host.name]
        record = records.get(host.name)
        rows.append({
            "name": host.name, "region": host.region, "endpoint": host.docker_url, "address": host.address,
            "origin": record.origin if record else "config", "state": host_state(host, mine, now),
            "drained": host.drained, "error": record.probe_error if record else None,
            "probed_at": record.probed_at if record else None,
            "cpus": {"total": host.cpus, "used": use["cpu_milli"] / 1000},
            "memory_gb": {"total": round(host.memory_mb / 1024, 1), "used": round(use["memory_mb"] / 1024, 1)},
            "gpus": [{"model": m, "total": len(host.gpus_of(m)), "used": use["gpus"].get(m, 0)}
                     for m in host.gpu_models],
            "workloads": counts.get(host.name, 0),
            "maintenance": [{"id": w.id, "starts_at": w.starts_at, "ends_at": w.ends_at} for w in mine],
        })
    return rows
