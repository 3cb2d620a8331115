"""The one resource ledger: who holds which CPU, memory and GPU indices on which host.

Atomic across processes without Python locks:
- GPU indices: one row per held index, ``UNIQUE(host, gpu_index)``.
- CPU and memory, per host and per user (quota): counters changed only by conditional
  ``UPDATE ... SET used = used + x WHERE used + x <= cap``, which cannot over-commit
  on SQLite (the write lock) or PostgreSQL (row locks, re-checked WHERE).
Callers run :meth:`Ledger.allocate` and :meth:`Ledger.release` inside
``Database.write_transaction()`` together with their own rows, so a failure leaves nothing.
"""

from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import CapacityError, QuotaError
from .hosts import closed_hosts
from .identity import Requester
from .models import Allocation, GpuAllocation, PortAllocation, UsageCounter, utcnow
from .options import ResourceRequest
from .resources import Gpu, Host

HOST, USER = "host", "user"


@dataclass(frozen=True)
class Placement:
    """Where a workload landed and what it holds."""

    workload_id: str
    host: str
    region: str
    cpu_milli: int
    memory_mb: int
    gpu_model: str | None
    gpus: tuple[Gpu, ...]

    @property
    def gpu_indices(self) -> list[int]:
        return [g.index for g in self.gpus]


@dataclass(frozen=True)
class ModelCapacity:
    model: str
    total: int
    free: int


@dataclass(frozen=True)
class RegionCapacity:
    region: str
    title: str
    cpu_total: float
    cpu_free: float
    cpu_free_largest: float  # the most one request can get on a single host
    memory_total_gb: float
    memory_free_gb: float
    memory_free_largest_gb: float
    gpus: tuple[ModelCapacity, ...]
    hosts_online: int


def _fmt(x: float) -> str:
    return f"{x:g}"


class Ledger:
    def __init__(self, db, resources, quotas):
        self.db = db
        self.resources = resources
        self.quotas = quotas

    # ---- counters ----

    @staticmethod
    def _ensure_counter(session: Session, scope: str, key: str) -> None:
        if session.get(UsageCounter, (scope, key)) is None:
            try:
                with session.begin_nested():
                    session.add(UsageCounter(scope=scope, key=key, cpu_milli=0, memory_mb=0, gpus=0))
            except IntegrityError:
                pass  # another process created it first

    @staticmethod
    def _add(session, scope, key, cpu, mem, gpus, caps=None) -> bool:
        """Add to a counter; with ``caps`` only if the result stays within them."""
        c = UsageCounter
        stmt = (
            update(c)
            .where(c.scope == scope, c.key == key)
            .values(cpu_milli=c.cpu_milli + cpu, memory_mb=c.memory_mb + mem, gpus=c.gpus + gpus)
        )
        if caps is not None:
            cap_cpu, cap_mem, cap_gpus = caps
            stmt = stmt.where(
                c.cpu_milli + cpu <= cap_cpu, c.memory_mb + mem <= cap_mem, c.gpus + gpus <= cap_gpus
            )
        return session.execute(stmt.execution_options(synchronize_session=False)).rowcount == 1

    # ---- allocate / release ----

    def allocate(self, session: Session, workload_id: str, requester: Requester,
                 request: ResourceRequest, prefer_host: str | None = None) -> Placement:
        """Hold resources for ``workload_id`` (whose Workload row is in this session);
        ``prefer_host`` is tried first where it fits (a warm server waits there)."""
        limits = self.quotas.limits_for(requester)
        cpu, mem, ngpu = request.cpu_milli, request.memory_mb, request.gpu_count
        self._ensure_counter(session, USER, requester.name)
        if not self._add(session, USER, requester.name, cpu, mem, ngpu,
                         caps=(limits.cpu_milli, limits.memory_mb, limits.gpus)):
            raise self._quota_error(session, requester.name, limits, request)

        candidates = self._candidates(session, request)
        candidates.sort(key=lambda h: h.name != prefer_host)  # stable: the rest keep their order
        for host in candidates:
            placement = self._try_host(session, host, workload_id, requester, request)
            if placement:
                return placement
        raise self._capacity_error(session, request)

    def _open_hosts(self, session, request: ResourceRequest) -> tuple[list[Host], list[str]]:
        """Hosts of the region that take new work now, and why the others do not."""
        hosts, why = [], []
        region_hosts = self.resources.hosts_in(request.region)
        closed = closed_hosts(session, [h.name for h in region_hosts], utcnow(), request.time_limit_s)
        for h in region_hosts:
            if not h.online:
                why.append(f"{h.name} does not answer")
            elif h.drained:
                why.append(f"{h.name} is draining")
            elif h.name in closed:
                why.append(closed[h.name])
            else:
                hosts.append(h)
        return hosts, why

    def _candidates(self, session, request: ResourceRequest) -> list[Host]:
        hosts, _why = self._open_hosts(session, request)
        if request.gpu_count:
            hosts = [h for h in hosts if len(h.gpus_of(request.gpu_model)) >= request.gpu_count]
            used = self._used_gpu_indices(session)
            # best fit: the host with the fewest free GPUs of this model that still fits,
            # so large requests later find whole hosts free
            return sorted(hosts, key=lambda h: len(self._free_gpus(h, request.gpu_model, used)))
        usage = self._host_usage(session)
        return sorted(hosts, key=lambda h: -(h.cpus * 1000 - usage.get(h.name, (0, 0))[0]))

    def _try_host(self, session, host: Host, workload_id, requester, request) -> Placement | None:
        cpu, mem, ngpu = request.cpu_milli, request.memory_mb, request.gpu_count
        for _attempt in range(3):
            try:
                with session.begin_nested():
                    self._ensure_counter(session, HOST, host.name)
                    caps = (int(host.cpus * 1000), host.memory_mb, len(host.gpus))
                    if not self._add(session, HOST, host.name, cpu, mem, ngpu, caps=caps):
                        return None
                    gpus = ()
                    if ngpu:
                        free = self._free_gpus(host, request.gpu_model, self._used_gpu_indices(session))
                        if len(free) < ngpu:
                            raise _NoRoom()
                        gpus = tuple(free[:ngpu])
                    session.add(Allocation(
                        workload_id=workload_id, user=requester.name, host=host.name,
                        region=host.region, cpu_milli=cpu, memory_mb=mem,
                        gpu_model=request.gpu_model if ngpu else None, gpu_count=ngpu,
                    ))
                    session.flush()
                    for gpu in gpus:
                        session.add(GpuAllocation(host=host.name, gpu_index=gpu.index, workload_id=workload_id))
                    session.flush()  # the unique constraint speaks here
                    return Placement(workload_id, host.name, host.region, cpu, mem,
                                     request.gpu_model if ngpu else None, gpus)
            except _NoRoom:
                return None
            except IntegrityError:
                continue  # another process took an index between our read and insert: re-read
        return None

    def release(self, session: Session, workload_id: str) -> bool:
        """Give back what ``workload_id`` holds (ports included). Idempotent; True if resources were held."""
        session.execute(delete(PortAllocation).where(PortAllocation.workload_id == workload_id))
        alloc = session.get(Allocation, workload_id)
        if alloc is None:
            return False
        session.execute(delete(GpuAllocation).where(GpuAllocation.workload_id == workload_id))
        self._ensure_counter(session, HOST, alloc.host)
        self._ensure_counter(session, USER, alloc.user)
        self._add(session, HOST, alloc.host, -alloc.cpu_milli, -alloc.memory_mb, -alloc.gpu_count)
        self._add(session, USER, alloc.user, -alloc.cpu_milli, -alloc.memory_mb, -alloc.gpu_count)
        session.delete(alloc)
        session.flush()
        return True

    def restore(self, session: Session, workload_id: str, user: str, host_name: str,
                cpu_milli: int, memory_mb: int, gpu_model: str | None, gpu_indices: list[int]) -> None:
        """Record what a running container holds (from its labels), whatever the caps say:
        Docker is the truth. Used by the reconciler; counters are recomputed afterwards."""
        host = self.resources.host(host_name)
        session.add(Allocation(
            workload_id=workload_id, user=user, host=host_name, region=host.region,
            cpu_milli=cpu_milli, memory_mb=memory_mb, gpu_model=gpu_model, gpu_count=len(gpu_indices),
        ))
        session.flush()
        for index in gpu_indices:
            try:
                with session.begin_nested():
                    session.add(GpuAllocation(host=host_name, gpu_index=index, workload_id=workload_id))
            except IntegrityError:
                pass  # already held by another record; the reconciler reports it

    def recompute_counters(self, session: Session) -> None:
        """Set every counter to the sum of the allocations (repairs drift after a crash)."""
        session.execute(delete(UsageCounter))
        for scope, column in ((HOST, Allocation.host), (USER, Allocation.user)):
            rows = session.execute(
                select(column, func.sum(Allocation.cpu_milli), func.sum(Allocation.memory_mb),
                       func.sum(Allocation.gpu_count)).group_by(column)
            )
            for key, cpu, mem, gpus in rows:
                session.add(UsageCounter(scope=scope, key=key, cpu_milli=cpu or 0,
                                         memory_mb=mem or 0, gpus=gpus or 0))
        session.flush()

    # ---- reading ----

    @staticmethod
    def _used_gpu_indices(session) -> dict[str, set[int]]:
        used: dict[str, set[int]] = {}
        for host, index in session.execute(select(GpuAllocation.host, GpuAllocation.gpu_index)):
            used.setdefault(host, set()).add(index)
        return used

    @staticmethod
    def _free_gpus(host: Host, model: str, used: dict[str, set[int]]) -> list[Gpu]:
        taken = used.get(host.name, set())
        return [g for g in host.gpus_of(model) if g.index not in taken]

    @staticmethod
    def _host_usage(session) -> dict[str, tuple[int, int]]:
        rows = session.execute(
            select(Allocation.host, func.sum(Allocation.cpu_milli), func.sum(Allocation.memory_mb))
            .group_by(Allocation.host)
        )
        return {host: (cpu or 0, mem or 0) for host, cpu, mem in rows}

    def user_usage(self, session, user: str) -> tuple[int, int, int]:
        cpu, mem, gpus = session.execute(
            select(func.sum(Allocation.cpu_milli), func.sum(Allocation.memory_mb),
                   func.sum(Allocation.gpu_count)).where(Allocation.user == user)
        ).one()
        return cpu or 0, mem or 0, gpus or 0

    def gpu_holders(self, session) -> dict[tuple[str, int], str]:
        """{(host, index): workload_id} of every held GPU."""
        rows = session.execute(select(GpuAllocation.host, GpuAllocation.gpu_index, GpuAllocation.workload_id))
        return {(h, i): w for h, i, w in rows}

    def capacity(self) -> list[RegionCapacity]:
        """Free and total capacity per region and GPU model, for forms and admin pages."""
        with self.db.session() as session:
            usage = self._host_usage(session)
            used = self._used_gpu_indices(session)
        out = []
        for region in self.resources.regions():
            hosts = [h for h in self.resources.hosts_in(region) if h.online and not h.drained]
            free_cpu = [max(0.0, h.cpus - usage.get(h.name, (0, 0))[0] / 1000) for h in hosts]
            free_mem = [max(0.0, (h.memory_mb - usage.get(h.name, (0, 0))[1]) / 1024) for h in hosts]
            models = []
            for model in self.resources.gpu_models(region):
                total = sum(len(h.gpus_of(model)) for h in hosts)
                free = sum(len(self._free_gpus(h, model, used)) for h in hosts)
                models.append(ModelCapacity(model, total, free))
            out.append(RegionCapacity(
                region=region, title=self.resources.region_title(region),
                cpu_total=sum(h.cpus for h in hosts), cpu_free=round(sum(free_cpu), 2),
                cpu_free_largest=round(max(free_cpu, default=0), 2),
                memory_total_gb=round(sum(h.memory_mb for h in hosts) / 1024, 1),
                memory_free_gb=round(sum(free_mem), 1),
                memory_free_largest_gb=round(max(free_mem, default=0), 1),
                gpus=tuple(models), hosts_online=len(hosts),
            ))
        return out

    # ---- messages ----

    def _quota_error(self, session, user, limits, request) -> QuotaError:
        cpu, mem, gpus = self.user_usage(session, user)
        if request.gpu_count and gpus + request.gpu_count > limits.gpus:
            return QuotaError("gpus", f"{request.gpu_count} more GPU(s) would exceed your quota of {limits.gpus}: "
                                      f"{gpus} already held by your other workloads")
        if cpu + request.cpu_milli > limits.cpu_milli:
            return QuotaError("cpu", f"{_fmt(request.cpu_milli / 1000)} more cores would exceed your quota of "
                                     f"{_fmt(limits.cpu)}: {_fmt(cpu / 1000)} already held by your other workloads")
        return QuotaError("memory_gb", f"{_fmt(request.memory_mb / 1024)} GB more would exceed your quota of "
                                       f"{_fmt(limits.memory_gb)} GB: {_fmt(mem / 1024)} GB already held by your other workloads")

    def _capacity_error(self, session, request) -> CapacityError:
        region = request.region
        hosts, why = self._open_hosts(session, request)
        if not hosts:
            return CapacityError("region", f"no host in region '{region}' takes new work now: "
                                           f"{'; '.join(why) or 'it has no hosts'}; try another region or later")
        usage = self._host_usage(session)
        if request.gpu_count:
            used = self._used_gpu_indices(session)
            free = [len(self._free_gpus(h, request.gpu_model, used)) for h in hosts]
            total = sum(len(h.gpus_of(request.gpu_model)) for h in hosts)
            if max(free, default=0) < request.gpu_count:
                return CapacityError(
                    "gpus", f"{request.gpu_count} × {request.gpu_model} are not free in region '{region}' now "
                            f"({sum(free)} of {total} free); try fewer GPUs or later")
        free_cpu = max((h.cpus - usage.get(h.name, (0, 0))[0] / 1000 for h in hosts), default=0)
        if request.cpu_milli / 1000 > free_cpu:
            return CapacityError("cpu", f"{_fmt(request.cpu_milli / 1000)} cores are not free on any host in "
                                        f"region '{region}' now (at most {_fmt(round(free_cpu, 2))}); try fewer or later")
        free_mem = max(((h.memory_mb - usage.get(h.name, (0, 0))[1]) / 1024 for h in hosts), default=0)
        return CapacityError("memory_gb", f"{_fmt(request.memory_mb / 1024)} GB are not free on any host in region "
                                          f"'{region}' now (at most {free_mem:.1f} GB); try less or later")


class _NoRoom(Exception):
    """Internal: a host passed the counter check but lacks free GPUs of the model."""
