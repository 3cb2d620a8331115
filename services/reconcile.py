"""After any restart: compare what Docker runs with what the database says, repair the database.

Docker is the truth. A running labdeck container whose resources are not in the ledger
gets them back (from its labels); a workload whose container is gone or stopped is ended
with that reason and its resources are released. Hosts that do not answer are left alone:
their workloads may well still run.
"""

import asyncio
import re
from dataclasses import dataclass, field
from datetime import timedelta

from docker.errors import DockerException
from sqlalchemy import select

from .models import Allocation, Workload, WorkloadState, utcnow
from .ports import parse_port_label, restore_ports
from .recipe import POOL_LABEL


@dataclass
class Observed:
    workload_id: str
    host: str
    running: bool
    labels: dict
    status: str  # Docker's human status, e.g. "Exited (137) 2 minutes ago"


@dataclass
class ReconcileReport:
    restored: list[str] = field(default_factory=list)  # allocations rebuilt from labels
    ended: dict[str, str] = field(default_factory=dict)  # workload id -> reason
    unreachable_hosts: list[str] = field(default_factory=list)


def _list_containers(client, instance):
    return client.containers(all=True, filters={"label": [f"labdeck.instance={instance}"]})


async def observe(platform) -> tuple[dict[str, Observed], list[str]]:
    """Every labdeck container of this instance on every host, and the hosts that did not answer.

    Several configured hosts may share one engine (a test set-up does); each engine is listed
    once and a container is attributed to the host its ``labdeck.host`` label names.
    """
    observed, unreachable = {}, []
    engines: dict[str, list] = {}
    for host in platform.resources.all_hosts():
        engines.setdefault(host.docker_url, []).append(host)
    for hosts in engines.values():
        names = [h.name for h in hosts]
        try:
            containers = await platform.docker.run(names[0], _list_containers, platform.instance)
        except (DockerException, OSError) as e:
            platform.log.warning("Reconcile: host(s) %s do not answer: %s", ", ".join(names), e)
            unreachable.extend(names)
            continue
        for c in containers:
            labels = c.get("Labels") or {}
            wid = labels.get("labdeck.id")
            if not wid:
                continue
            host_name = labels.get("labdeck.host") if labels.get("labdeck.host") in names else names[0]
            running = c.get("State") == "running"
            prev = observed.get(wid)
            if prev and prev.running and not running:
                continue  # keep the running copy
            observed[wid] = Observed(wid, host_name, running, labels, c.get("Status") or c.get("State", ""))
    return observed, unreachable


def _int(value, default=0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def end_reason(obs: Observed | None) -> str:
    """Why a workload whose container is not running ended, in the words users see."""
    # seen while Docker removes it (someone ran `docker rm -f`): it is vanishing
    if obs is None or obs.status.startswith("Removal In Progress"):
        return "lost: container vanished"
    exited = re.match(r"Exited \((-?\d+)\)", obs.status)
    if exited:
        return f"exited with code {exited.group(1)}"
    return f"lost: container {obs.status or 'stopped'}"


async def reconcile(platform, *, kinds: tuple[str, ...] | None = None,
                    start_grace: timedelta = timedelta(minutes=10), force: bool = False) -> ReconcileReport:
    """Repair the database from Docker. Only workloads of ``kinds`` (None: all) are ended here;
    the hub ends its notebooks itself, the service its sessions and jobs. Resources of every
    running container are restored whatever its kind. Without ``force``, the write lock is
    taken only when something needs repair."""
    observed, unreachable = await observe(platform)
    # the database work may wait on another process's write lock: keep it off the event loop
    return await asyncio.to_thread(repair, platform, observed, unreachable, kinds, start_grace, force)


def _plan(session, platform, observed, unreachable, kinds, start_grace, now):
    """(running containers to restore, workloads to end with reasons, ended workloads still holding)."""
    held = set(session.scalars(select(Allocation.workload_id)))
    restore = [obs for wid, obs in observed.items()
               if obs.running and wid not in held and not _unclaimed_warm_server(session, obs)]
    reopen = []
    for obs in observed.values():
        workload = session.get(Workload, obs.workload_id) if obs.running else None
        if workload is not None and workload.state == WorkloadState.ended.value:
            reopen.append(obs)
    to_end = {}
    # queued jobs hold nothing and have no container yet: nothing to compare
    query = select(Workload).where(Workload.state.not_in((WorkloadState.ended.value, WorkloadState.queued.value)))
    if kinds is not None:
        query = query.where(Workload.kind.in_(kinds))
    for workload in session.scalars(query):
        obs = observed.get(workload.id)
        if (obs and obs.running) or workload.host in unreachable:
            continue
        if workload.state == WorkloadState.starting.value and now - workload.created_at < start_grace:
            continue  # being started right now: no container yet
        to_end[workload.id] = end_reason(obs)
    stale = list(session.scalars(
        select(Allocation.workload_id).join(Workload, Workload.id == Allocation.workload_id)
        .where(Workload.state == WorkloadState.ended.value)))
    return restore, reopen, to_end, stale


def _unclaimed_warm_server(session, obs: Observed) -> bool:
    """A warm server nobody claimed yet holds nothing: the hub's pool owns it. Claimed, it has a
    workload row (its labels cannot name the user: they were set before the claim)."""
    return bool(obs.labels.get(POOL_LABEL)) and session.get(Workload, obs.workload_id) is None


def repair(platform, observed: dict[str, Observed], unreachable: list[str], kinds=None,
           start_grace: timedelta = timedelta(minutes=10), force: bool = False) -> ReconcileReport:
    """Make the database agree with what Docker runs (see the module's docstring)."""
    report = ReconcileReport(unreachable_hosts=unreachable)
    now = utcnow()
    if not force:
        with platform.db.session() as session:  # a read first: most rounds find nothing to do
            if not any(_plan(session, platform, observed, unreachable, kinds, start_grace, now)):
                return report
    ledger = platform.ledger
    known_hosts = {h.name for h in platform.resources.all_hosts()}
    with platform.db.write_transaction() as session:
        restore, reopen, to_end, stale = _plan(session, platform, observed, unreachable, kinds, start_grace, now)
        for obs in reopen:
            # ended in the database but alive in Docker: Docker wins
            w = session.get(Workload, obs.workload_id)
            w.state, w.ended_at, w.end_reason = WorkloadState.running.value, None, None
        for obs in restore:
            if obs.host not in known_hosts:
                continue
            workload = session.get(Workload, obs.workload_id) or _workload_from_labels(session, obs, now)
            labels = obs.labels
            gpus = [int(g) for g in labels.get("labdeck.gpus", "").split(",") if g.strip().isdigit()]
            ledger.restore(session, obs.workload_id, workload.user, obs.host, _int(labels.get("labdeck.cpu_milli")),
                           _int(labels.get("labdeck.memory_mb")), labels.get("labdeck.gpu_model") or None, gpus)
            restore_ports(session, obs.host, obs.workload_id, parse_port_label(labels.get("labdeck.ports", "")))
            report.restored.append(obs.workload_id)
        for wid, reason in to_end.items():
            w = session.get(Workload, wid)
            ledger.release(session, wid)
            w.state, w.ended_at, w.end_reason = WorkloadState.ended.value, now, reason
            report.ended[wid] = reason
        for wid in stale:  # a crash between ending a workload and releasing its resources
            ledger.release(session, wid)
        ledger.recompute_counters(session)
    return report


def _workload_from_labels(session, obs: Observed, now) -> Workload:
    """A running labdeck container the database does not know (a restored backup): record it."""
    labels = obs.labels
    workload = Workload(
        id=obs.workload_id, kind=labels.get("labdeck.kind", "unknown"), user=labels.get("labdeck.user", ""),
        region=labels.get("labdeck.region", ""), host=obs.host, image="",
        cpu_milli=_int(labels.get("labdeck.cpu_milli")), memory_mb=_int(labels.get("labdeck.memory_mb")),
        gpu_model=labels.get("labdeck.gpu_model") or None,
        gpu_count=len([g for g in labels.get("labdeck.gpus", "").split(",") if g]),
        options={}, state=WorkloadState.running.value, started_at=now,
    )
    session.add(workload)
    session.flush()
    return workload
