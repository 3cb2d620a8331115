"""The job queue: first come first served per region, with bounded backfilling.

When a waiting job cannot be placed, later jobs of the same region that fit may start
before it (a small job need not wait behind a big one), but each time that happens the
waiting job is counted as bypassed; once it has been bypassed ``JobSettings.max_bypasses``
times, nothing later in its region starts until it has. A job that only waits because its
owner's other work fills their quota does not hold anyone else back. Placement goes through
the one ledger, so jobs, notebooks and debug sessions never over-commit anything.
"""

import asyncio

from sqlalchemy import select

from .errors import CapacityError, QuotaError
from .identity import Requester
from .models import Job, Workload, WorkloadState
from .options import ResourceRequest


class JobQueue:
    def __init__(self, platform):
        self.platform = platform
        self._lock = asyncio.Lock()  # one scheduling pass at a time in this process

    async def run(self) -> list[str]:
        """Start every queued job that can be placed now; returns their IDs.

        Placement is one pass at a time; the containers of the jobs it placed are then created
        side by side, outside the lock, so a slow start (an image pulled from the registry)
        neither holds up the others nor the next pass."""
        async with self._lock:
            started = await asyncio.to_thread(self._place)
        if started:
            await asyncio.gather(*(self._start(w, p) for w, p in started))
            self.platform.log.info("Started jobs: %s", ", ".join(w for w, _ in started))
        return [w for w, _ in started]

    async def _start(self, workload_id: str, placement) -> None:
        from .jobs import start_container

        try:
            await start_container(self.platform, workload_id, placement)
        except Exception as e:  # Docker refused: the job ends, its resources go back
            reason = getattr(e, "explanation", None) or str(e)
            self.platform.log.warning("Job %s failed to start: %s", workload_id, reason)
            await asyncio.to_thread(self._fail, workload_id, f"failed to start: {reason}")

    def _place(self) -> list:
        platform = self.platform
        ledger, limit = platform.ledger, platform.jobs.max_bypasses
        started, waiting, held_back = [], {}, set()
        with platform.db.write_transaction() as s:
            queued = s.execute(select(Workload, Job).join(Job, Job.workload_id == Workload.id)
                               .where(Workload.state == WorkloadState.queued.value).order_by(Job.queued_at))
            for workload, job in queued:
                region = workload.region
                if region in held_back:
                    continue
                request = ResourceRequest(region, workload.cpu_milli, workload.memory_mb,
                                          workload.gpu_count, workload.gpu_model, job.time_limit_s)
                owner = Requester(workload.user, frozenset(job.groups or ()))
                try:
                    with s.begin_nested():
                        placement = ledger.allocate(s, workload.id, owner, request)
                except QuotaError:
                    continue  # its owner's other work fills their quota; others go on
                except CapacityError:
                    waiting.setdefault(region, []).append(job)
                    if job.bypassed >= limit:
                        held_back.add(region)  # it has waited long enough: the region waits for it
                    continue
                for earlier in waiting.get(region, []):
                    earlier.bypassed += 1
                workload.state = WorkloadState.starting.value
                workload.host = placement.host
                started.append((workload.id, placement))
        return started

    def _fail(self, workload_id: str, reason: str) -> None:
        from .workloads import end_workload

        end_workload(self.platform, workload_id, reason)

    def requeue(self, workload_id: str) -> None:
        """Back to the queue, keeping its place (a restart interrupted its start)."""
        with self.platform.db.write_transaction() as s:
            workload = s.get(Workload, workload_id)
            if workload is None or workload.state != WorkloadState.starting.value:
                return
            self.platform.ledger.release(s, workload_id)
            workload.state, workload.host = WorkloadState.queued.value, None
