"""The service's watch over what it runs: after a restart and then every few seconds.

Each round compares Docker with the database (services.reconcile) for the kinds the service
owns, ends sessions whose containers exited or vanished with the true reason, removes their
dead containers, finishes jobs (keeping their log and exit status), enforces time limits,
starts queued jobs that now fit, and follows sessions still starting. Rounds that find
nothing to repair only read.
"""

import asyncio

from traitlets import Float
from traitlets.config import LoggingConfigurable

from . import debug, jobs, snapshots
from .reconcile import observe, repair
from .workloads import active_workloads

# the kinds the generic repair ends; jobs need their log and exit status kept first (services.jobs)
REPAIRED_KINDS = ("debug", "cache")


class Monitor(LoggingConfigurable):
    interval = Float(5.0, help="Seconds between two comparisons of Docker and the database.").tag(config=True)

    def __init__(self, platform, **kwargs):
        super().__init__(parent=platform, **kwargs)
        self.platform = platform
        self._following: set[str] = set()

    async def start(self) -> None:
        """Run once at once (re-adopting what survived a restart), then every ``interval``."""
        interrupted = await asyncio.to_thread(snapshots.interrupted_snapshots, self.platform)
        if interrupted:
            self.log.warning("%d snapshot(s) were being saved when the service stopped; each is adopted "
                             "when the engine has finished its commit", len(interrupted))
        for image_id in interrupted:
            self.platform.spawn_background(snapshots.adopt_interrupted(self.platform, image_id))
        await self.round(force=True)
        self.platform.spawn_background(self._loop())

    async def _loop(self):
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round()
            except Exception:  # a bad round must not end the watch
                self.log.exception("Monitor round failed; trying again in %.0f s", self.interval)

    async def round(self, force: bool = False) -> None:
        platform = self.platform
        observed, unreachable = await observe(platform)
        report = await asyncio.to_thread(repair, platform, observed, unreachable, REPAIRED_KINDS,
                                         force=force)
        for wid, reason in report.ended.items():
            obs = observed.get(wid)
            self.log.info("Workload %s ended: %s", wid, reason)
            if obs is not None:
                await debug.remove_container(platform, obs.host, debug.container_name(platform, wid))
        await jobs.check(platform, observed, unreachable)
        await platform.job_queue.run()
        await platform.cache_runner.kick()  # resumes copies a restart interrupted
        for workload in await asyncio.to_thread(active_workloads, platform, kind=debug.KIND):
            if workload.state == "starting" and workload.id not in self._following:
                self._following.add(workload.id)
                platform.spawn_background(self._follow(workload.id))

    async def _follow(self, workload_id: str):
        try:
            await debug.wait_until_ready(self.platform, workload_id)
        finally:
            self._following.discard(workload_id)
