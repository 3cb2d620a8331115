"""After any restart: compare what Docker runs with what the database says, repair the database.

Docker is the truth. A running labdeck container whose resources are not in the ledger
gets them back (from its labels); a workload whose container is gone or stopped is ended
with that reason and its resources are released. Hosts that do not answer are left alone:
their workloads may well still run.
"""

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from docker.errors import DockerException
from sqlalchemy import select

from .models import Allocation, Workload, WorkloadState, utcnow


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


async def reconcile(platform, *, start_grace: timedelta = timedelta(minutes=10)) -> ReconcileReport:
    observed, unreachable = await observe(platform)
    # the database work may wait on another process's write lock: keep it off the event loop
    return await asyncio.to_thread(repair, platform, observed, unreachable, start_grace)


def repair(platform, observed: dict[str, Observed], unreachable: list[str],
           start_grace: timedelta) -> ReconcileReport:
    """Make the database agree with what Docker runs (see the module's docstring)."""
    report = ReconcileReport(unreachable_hosts=unreachable)
    ledger = platform.ledger
    now = utcnow()
    with platform.db.write_transaction() as session:
        held = {a.workload_id: a for a in session.scalars(select(Allocation))}
        for wid, obs in observed.items():
            if not obs.running:
                continue
            workload = session.get(Workload, wid)
            labels = obs.labels
            if workload is None:
                workload = Workload(
                    id=wid, kind=labels.get("labdeck.kind", "unknown"), user=labels.get("labdeck.user", ""),
                    region=labels.get("labdeck.region", ""), host=obs.host, image="",
                    cpu_milli=_int(labels.get("labdeck.cpu_milli")), memory_mb=_int(labels.get("labdeck.memory_mb")),
                    gpu_model=labels.get("labdeck.gpu_model") or None,
                    gpu_count=len([g for g in labels.get("labdeck.gpus", "").split(",") if g]),
                    options={}, state=WorkloadState.running.value, started_at=now,
                )
                session.add(workload)
                session.flush()
            elif workload.state == WorkloadState.ended.value:
                # ended in the database but alive in Docker: Docker wins
                workload.state, workload.ended_at, workload.end_reason = WorkloadState.running.value, None, None
            if wid not in held and obs.host in {h.name for h in platform.resources.all_hosts()}:
                gpus = [int(g) for g in labels.get("labdeck.gpus", "").split(",") if g.strip().isdigit()]
                ledger.restore(session, wid, workload.user, obs.host, _int(labels.get("labdeck.cpu_milli")),
                               _int(labels.get("labdeck.memory_mb")), labels.get("labdeck.gpu_model") or None, gpus)
                report.restored.append(wid)

        open_workloads = session.scalars(select(Workload).where(Workload.state != WorkloadState.ended.value))
        for workload in open_workloads:
            obs = observed.get(workload.id)
            if obs and obs.running:
                continue
            if workload.host in unreachable:
                continue
            if workload.state == WorkloadState.starting.value and now - workload.created_at < start_grace:
                continue  # being started right now: no container yet
            reason = (f"lost: container stopped outside labdeck ({obs.status})" if obs
                      else "lost: container vanished")
            ledger.release(session, workload.id)
            workload.state, workload.ended_at, workload.end_reason = WorkloadState.ended.value, now, reason
            report.ended[workload.id] = reason

        # allocations whose workload ended (crash between steps) are released too
        for wid, alloc in held.items():
            workload = session.get(Workload, wid)
            if workload is not None and workload.state == WorkloadState.ended.value and alloc in session:
                ledger.release(session, wid)
        ledger.recompute_counters(session)
    return report
