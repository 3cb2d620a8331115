"""LabdeckSpawner's side of the warm server pool (spawner/warm_pool.py): take a warm server for
a start whose options the pool serves, claim it, or give it up so that the start goes cold."""

import asyncio

from docker.errors import APIError

from services.errors import OptionError
from services.options import WorkloadRequest
from services.platform import get_platform
from services.workloads import mark_running

from . import warm_server
from .warm_pool import WarmPool
from .warm_server import WarmPoolError, WarmServer

SERVER_PORT = 8888  # the single-user server's port inside every container (DockerSpawner's default)


class WarmClaims:
    """Mixed into LabdeckSpawner, which provides ``_open``, ``docker``, ``progress_log``,
    ``_wait_until_answering`` and the hub's Spawner API."""

    _warm_pool: WarmPool | None = None  # one per hub process, started with the hub
    _warm: WarmServer | None = None  # taken for the start under way

    @classmethod
    def start_warm_pool(cls, config, log) -> None:
        """Fill the warm server pool (called once the hub's event loop runs)."""
        if WarmClaims._warm_pool is None:
            WarmClaims._warm_pool = WarmPool(get_platform(config, log), SERVER_PORT)
            WarmClaims._warm_pool.platform.spawn_background(WarmClaims._warm_pool.start())

    async def _open_with_warm_server(self, request: WorkloadRequest):
        """Open the workload, under a warm server's ID when the pool serves the request:
        (workload, placement, that warm server or None)."""
        platform, pool = self.platform, self._warm_pool
        warm = pool.take(request.resources.region) if pool and pool.port == self.port and pool.serves(request) else None
        try:
            workload, placement = await asyncio.to_thread(
                self._open, platform, self.requester, request, self.workload_id, warm)
        except OptionError:
            if warm is not None:
                pool.give_back(warm)  # refused and rolled back: nobody holds its ID
            raise
        except BaseException:
            if warm is not None:  # unknown whether a workload now holds its ID: never hand it out
                platform.spawn_background(warm_server.remove(platform, warm))
            raise
        if warm is not None and placement.host != warm.host:
            await warm_server.remove(platform, warm)  # its host was full; its ID is this workload's now
            warm = None
        return workload, placement, warm

    async def _start_warm_or_give_up(self, warm: WarmServer):
        """(ip, port) of the claimed warm server, or None when it could not be used (removed)."""
        try:
            return await self._start_warm(warm)
        except WarmPoolError as e:
            self.log.warning("Warm server %s refused %s: %s; starting cold", warm.workload_id, self._log_name, e)
            self.progress_log.add(20, "The warm server could not be used; starting a new one")
            await warm_server.remove(self.platform, warm)
            self.warm_slot = ""
            return None

    async def _start_warm(self, warm: WarmServer):
        """Claim the warm server: give it the user's folder and environment, and this server's name."""
        self.progress_log.add(50, f"Handing you a running server on host {warm.host}")
        self.warm_slot = warm.workload_id
        self.object_id = warm.container_id
        home = self._request.mounts[0].host_path if self._request.mounts else None
        try:
            claim = await warm_server.claim(warm, home, self.get_env(), await self.get_command())
        except WarmPoolError:
            raise
        except Exception as e:  # the user's folder could not be mounted, say
            raise WarmPoolError(f"{type(e).__name__}: {e}") from e
        # The name follows in the background: the hub finds the container by its ID (get_object),
        # and an engine busy with someone's snapshot took over a second to rename (it writes the
        # container's config to a disk the commit keeps full), a second the user would wait for.
        self.platform.spawn_background(self._rename(warm.container_id))
        self.progress_log.add(70, "Server claimed; waiting for JupyterLab to answer")
        _, listening = await asyncio.gather(
            asyncio.to_thread(mark_running, self.platform, self.workload_id, self.object_name, self.object_id),
            claim.listening(timeout=self.http_timeout))
        if not listening:  # else it is initialized and accepts connections: the hub's first check succeeds
            await self._wait_until_answering(warm.ip, warm.port)
        self.progress_log.add(95, "JupyterLab is answering")
        self.progress_log.finish()
        return warm.ip, warm.port

    async def _rename(self, container_id: str) -> None:
        """Give the container this server's name (people and tools look for it by name), unless
        the server has stopped meanwhile (stop clears object_id)."""
        try:
            await self.docker("rename", container_id, self.object_name)
        except APIError as e:
            if e.status_code != 409 or self.object_id != container_id:
                if self.object_id == container_id:
                    self.log.warning("Could not rename %s to %s: %s", container_id[:12], self.object_name, e)
                return
            # a container an earlier start left under this name, as DockerSpawner.start removes it
            self.log.warning("Removing %s that should have been cleaned up", self.object_name)
            await self.docker("remove_container", self.object_name, force=True)
            await self.docker("rename", container_id, self.object_name)
