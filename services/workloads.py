"""A workload's life in the database: opened with its resources, running, ended with a reason.

Opening validates nothing by itself (see :mod:`services.options`) but is atomic: the
workload row and its ledger line are written in one transaction or not at all.
"""

from sqlalchemy import select

from .errors import OptionError
from .caches import record_usage
from .identity import Requester
from .ledger import Placement
from .models import Workload, WorkloadState, utcnow
from .naming import new_workload_id
from .options import WorkloadRequest

ID_PREFIX = {"notebook": "nb", "debug": "dbg", "job": "job", "cache": "cache"}


def open_workload(platform, requester: Requester, request: WorkloadRequest, name: str = "", hold=None,
                  workload_id: str = "", prefer_host: str | None = None) -> tuple[Workload, Placement]:
    """Record a new workload and hold its resources; raises QuotaError/CapacityError.

    ``hold(session, workload, placement)``, when given, holds more in the same transaction
    (a debug session's ports); if it raises, nothing at all is kept. A warm server claimed
    for the workload gives its ``workload_id`` (its container's labels carry it) and its host
    as ``prefer_host``.
    """
    workload_id = workload_id or new_workload_id(ID_PREFIX[request.kind])
    r = request.resources
    with platform.db.write_transaction() as session:
        workload = Workload(
            id=workload_id, kind=request.kind, user=requester.name, name=name,
            state=WorkloadState.starting.value, region=r.region, image=request.image.name,
            cpu_milli=r.cpu_milli, memory_mb=r.memory_mb, gpu_model=r.gpu_model,
            gpu_count=r.gpu_count, options=request.as_options(),
        )
        session.add(workload)
        session.flush()
        placement = platform.ledger.allocate(session, workload_id, requester, r, prefer_host=prefer_host)
        workload.host = placement.host
        if hold is not None:
            hold(session, workload, placement)
    record_usage(platform, workload_id, requester.name, request.kind, request.mounts)
    return workload, placement


def mark_running(platform, workload_id: str, container_name: str, container_id: str) -> None:
    with platform.db.session() as session:
        workload = session.get(Workload, workload_id)
        if workload is not None and workload.state != WorkloadState.ended.value:
            workload.state = WorkloadState.running.value
            workload.container_name = container_name
            workload.container_id = container_id
            workload.started_at = workload.started_at or utcnow()


def end_workload(platform, workload_id: str, reason: str) -> bool:
    """Mark ended and release its resources. Idempotent: the first reason wins."""
    if not workload_id:
        return False
    with platform.db.write_transaction() as session:
        platform.ledger.release(session, workload_id)
        workload = session.get(Workload, workload_id)
        if workload is None or workload.state == WorkloadState.ended.value:
            return False
        workload.state = WorkloadState.ended.value
        workload.end_reason = reason
        workload.ended_at = utcnow()
        return True


def get_workload(platform, workload_id: str) -> Workload | None:
    with platform.db.session() as session:
        return session.get(Workload, workload_id)


def last_options(platform, user: str, kind: str) -> dict | None:
    """Options of the user's most recent workload of this kind that got its resources."""
    with platform.db.session() as session:
        workload = session.scalars(
            select(Workload)
            .where(Workload.user == user, Workload.kind == kind, Workload.host.is_not(None))
            .order_by(Workload.created_at.desc())
            .limit(1)
        ).first()
        return dict(workload.options) if workload else None


def active_workloads(platform, *, kind: str | None = None, user: str | None = None) -> list[Workload]:
    with platform.db.session() as session:
        query = select(Workload).where(Workload.state != WorkloadState.ended.value)
        if kind:
            query = query.where(Workload.kind == kind)
        if user:
            query = query.where(Workload.user == user)
        return list(session.scalars(query.order_by(Workload.created_at)))


def ended_for_deletion(session, requester: Requester, ids: list[str], kind: str, noun: str) -> list[Workload]:
    """The ended workloads of ``kind`` named by ``ids`` that the requester may delete (their
    own; an admin's: anyone's). One that is unknown, someone else's, or not ended refuses all."""
    rows = {w.id: w for w in session.scalars(select(Workload).where(Workload.id.in_(ids), Workload.kind == kind))}
    for workload_id in ids:
        w = rows.get(workload_id)
        if w is None or not (requester.admin or w.user == requester.name):
            raise OptionError("ids", f"no such {noun}: {str(workload_id)[:40]}")
        if w.state != WorkloadState.ended.value:
            raise OptionError("ids", f"{noun} {workload_id} has not ended; terminate it first")
    return list(rows.values())
