"""The warm server pool: servers started before anyone asks, handed out on "Start my Server".

A cold start creates a container, starts it and waits for Python to import JupyterLab: most
of a second of engine and CPU time, slower still when the engine is busy with someone's
snapshot. The pool keeps ``size`` containers per host already running ``labdeck-standby``
(images/notebook/), each with its imports done, waiting for a claim; after more people than
that started at once, up to ``grow_to`` (spawner/warm_demand.py). This module keeps the pool
full and clean; spawner/warm_server.py makes, claims and removes one warm server, and
spawner/warm_claims.py is the spawner's side. A claim bind-mounts the user's folder onto the
container's slot (spawner/bind_mounts.py) and sends the user's environment over a Unix socket:
the server answers about 0.15 s later, with no engine call on the user's path (the container
takes its user's name in the background).

Who is served: a notebook start whose options are the pool's (its image, the default CPU and
memory, no GPU, and either no folder or one writable folder at /home/jovyan/work). Anything
else starts cold as before, as does every start when the pool is empty.

What it needs: root on the engine's machine (mount(2)), a local engine, and that machine's
mount namespace. The pool switches itself off, with one log line, where that is not so.

How it stays safe:
- a warm server is claimed once and never returns to the pool; its secret is compared in
  constant time, and the socket lives in a folder only the host can reach;
- its labels were set before the claim, so they say ``labdeck.pool=standby`` and no user; the
  claim records the workload under the container's own ``labdeck.id``, and reconcile takes an
  unclaimed warm server for what it is (it holds no resources);
- a container whose user folder did not arrive refuses the claim, and the start goes cold;
- at the hub's start, unclaimed warm servers are replaced (the image may have been rebuilt)
  and slots whose container is gone are unmounted and removed; at its exit, the waiting ones
  are removed.
"""

import asyncio
import atexit
import os
import time

from docker.errors import DockerException
from sqlalchemy import select
from traitlets import Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from services.models import Workload, WorkloadState
from services.options import WorkloadRequest

from . import bind_mounts, warm_demand, warm_server
from .hub_process import running_hub
from .warm_server import KIND, WORK, Blueprint, WarmServer



def usable_mounts(mounts) -> bool:
    """Whether a start's folders can be given to a warm server: none, or one writable folder at
    /home/jovyan/work (the only place a folder can arrive in a running container)."""
    return len(mounts) == 0 or (len(mounts) == 1 and mounts[0].container_path == WORK and not mounts[0].read_only)


class WarmPool(LoggingConfigurable):
    size = Integer(
        2,
        help="Warm servers kept waiting per local host (0: no pool), more after bursts of starts "
             "(grow_to). Each is an idle JupyterLab process, about 60 MB of memory and no CPU, and "
             "holds no resources of the ledger.",
    ).tag(config=True)

    grow_to = Integer(
        16,
        help="The most warm servers a host's pool grows to when more people than ``size`` started "
             "at once within the last ``demand_days`` (a class starting together): the next such "
             "burst then finds a server for each. Not above ``size``: the pool keeps ``size``.",
    ).tag(config=True)

    burst_window = Float(
        10.0,
        help="Seconds in which starts count as one burst: a few times what the pool takes to "
             "replace a claimed server. A steady stream of starts is served by ``size`` servers.",
    ).tag(config=True)

    demand_days = Float(7.0, help="Days a burst of starts keeps the pool larger.").tag(config=True)

    image = Unicode(
        help="Image of the warm servers. Default: the first platform image offered to everyone "
             "for notebooks. It must have labdeck-standby (images/notebook/).",
    ).tag(config=True)

    refill_delay = Float(
        2.0,
        help="Seconds after the last claim, and after the last cold start ended, before claimed "
             "servers are replaced, so that a burst of starts gets the CPU first.",
    ).tag(config=True)

    standby_timeout = Float(
        60.0, help="Seconds a new warm server may take to be ready for a claim."
    ).tag(config=True)

    uid = Integer(1000, help="User ID the image's server runs as (owner of the pool's folders).").tag(config=True)
    gid = Integer(100, help="Group ID the image's server runs as.").tag(config=True)

    @default("image")
    def _default_image(self):
        for spec in self.parent.catalog.platform_images:
            if KIND in spec.get("kinds", [KIND]) and not spec.get("groups"):
                return spec["name"]
        return ""

    def __init__(self, platform, port: int, **kwargs):
        super().__init__(parent=platform, **kwargs)
        self.platform = platform
        self.port = port  # the single-user server's port inside the container
        self.dir = warm_server.pool_dir(platform)
        self.ready: dict[str, list[WarmServer]] = {}  # host -> warm servers waiting for a claim
        self.hosts: list = []  # the hosts served (empty: the pool is off)
        self.targets: dict[str, int] = {}  # host -> warm servers to keep (spawner/warm_demand.py)
        self._last_claim = 0.0  # or the last cold start's end
        self._cold_starts = 0  # under way on this hub: refills wait for them
        self._refill: asyncio.Task | None = None
        self._wake = asyncio.Event()

    # ---- what the pool serves ----

    @property
    def cpu_milli(self) -> int:
        return int(round(float(self.platform.quotas.request_defaults["cpu"]) * 1000))

    @property
    def memory_mb(self) -> int:
        return int(round(float(self.platform.quotas.request_defaults["memory_gb"]) * 1024))

    @property
    def blueprint(self) -> Blueprint:
        return Blueprint(self.image, self.cpu_milli, self.memory_mb, self.port, self.uid, self.gid,
                         self.standby_timeout)

    def serves(self, request: WorkloadRequest) -> bool:
        r = request.resources
        return (bool(self.hosts) and request.kind == KIND and request.image.name == self.image
                and r.gpu_count == 0 and r.cpu_milli == self.cpu_milli and r.memory_mb == self.memory_mb
                and not request.extra and usable_mounts(request.mounts))

    def give_back(self, warm: WarmServer) -> None:
        """Return a warm server taken for a start that was refused before its claim (a quota)."""
        if warm.host in self.ready:
            self.ready[warm.host].insert(0, warm)

    def take(self, region: str) -> WarmServer | None:
        """A warm server of ``region`` for one claim, or None; it leaves the pool for good."""
        for host in self.hosts:
            if host.region == region and self.ready.get(host.name):
                self._last_claim = time.monotonic()
                self._wake.set()
                return self.ready[host.name].pop(0)
        return None

    def cold_start_began(self) -> None:
        self._cold_starts += 1

    def cold_start_ended(self) -> None:
        """Refills wait until no cold start is under way: in a burst larger than the pool they
        would take the CPU from the people waiting (the first burst of ten here took 1.10x
        stock's time with refills beside it)."""
        self._cold_starts -= 1
        self._last_claim = time.monotonic()
        self._wake.set()

    # ---- start-up ----

    async def start(self) -> None:
        """Check the machine, replace what an earlier hub left, and fill the pool."""
        hosts = self.local_hosts()
        why_not = self._why_off(hosts)
        if why_not:
            self.log.info("Warm server pool off: %s", why_not)
            return
        for sub in ("slots", "control"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        try:
            shared = await asyncio.to_thread(bind_mounts.ensure_shared, str(self.dir / "slots"))
        except OSError as e:
            self.log.warning("Warm server pool off: cannot share %s for mount propagation: %s", self.dir, e)
            return
        if shared:
            self.log.info("Warm server pool: made %s a shared mount", self.dir / "slots")
        kept = await self._sweep(hosts)
        await asyncio.to_thread(self._remove_folders_except, kept)
        self.hosts = hosts
        self.ready = {h.name: [] for h in hosts}
        await self._update_targets()
        self._wake.set()
        self._refill = self.platform.spawn_background(self._refill_forever())
        atexit.register(self._remove_waiting)
        self.log.info("Warm server pool: %d per host (growing to %d after bursts) on %s, image %s", self.size,
                      max(self.size, self.grow_to), ", ".join(h.name for h in hosts), self.image)

    def _why_off(self, hosts) -> str:
        if self.size <= 0:
            return "WarmPool.size is 0"
        if not self.image:
            return "no platform image is offered to everyone for notebooks"
        if os.geteuid() != 0:
            return "the hub does not run as root (it mounts users' folders into running containers)"
        if not hosts:
            return "no local Docker engine answers"
        return ""

    async def _sweep(self, hosts) -> set[str]:
        """Remove the unclaimed warm servers an earlier hub left; the IDs of claimed ones
        still running (their folders stay mounted)."""
        engines = {h.docker_url: h.name for h in hosts}  # hosts sharing an engine: list it once
        found = []  # (a host on the engine it was found on, container)
        for host_name in engines.values():
            containers = await self.platform.docker.run(host_name, warm_server.list_containers, self.platform.instance)
            found += [(host_name, c) for c in containers]
        claimed = await asyncio.to_thread(self._claimed, [c["Labels"].get("labdeck.id", "") for _, c in found])
        kept = set()
        for host_name, c in found:
            wid = c["Labels"].get("labdeck.id", "")
            if wid in claimed:
                if c.get("State") == "running":
                    kept.add(wid)
                continue  # stopped: the hub's poll ends it and removes the container
            await warm_server.remove_container(self.platform, host_name, c["Id"])
        return kept

    def _remove_waiting(self) -> None:
        """At the hub's exit: remove the warm servers still waiting, so that a stopped platform
        leaves nothing running (the next hub starts new ones; a killed hub's are swept then)."""
        for host_name, waiting in self.ready.items():
            for warm in waiting:
                try:
                    self.platform.docker.client(host_name).remove_container(warm.container_id, force=True)
                    warm_server.release(self.platform, warm.workload_id)
                except (DockerException, OSError) as e:
                    self.log.warning("Warm server pool: could not remove %s at exit: %s", warm.workload_id, e)
            waiting.clear()

    def _claimed(self, ids: list[str]) -> set[str]:
        """Those of ``ids`` whose workload is open (a workload that ended keeps nothing running)."""
        with self.platform.db.session() as session:
            return set(session.scalars(select(Workload.id).where(
                Workload.id.in_(ids), Workload.state != WorkloadState.ended.value)))

    def _remove_folders_except(self, kept: set[str]) -> None:
        for sub in ("slots", "control"):
            for folder in (self.dir / sub).iterdir():
                if folder.name not in kept:
                    try:
                        warm_server.remove_folder(str(folder))
                    except OSError as e:  # left in place: never removed through a mount
                        self.log.warning("Warm server pool: could not remove %s: %s", folder, e)

    # ---- keeping it full ----

    def local_hosts(self) -> list:
        """The hosts a pool can serve: those on the hub's own engine (the claim bind-mounts the
        user's folder on this machine) that answered their last probe."""
        return [h for h in self.platform.resources.all_hosts() if h.is_local and h.online]

    def targets_for(self, hosts) -> dict[str, int]:
        """Warm servers to keep per host: ``size``, or more after a burst of starts in its
        region (spawner/warm_demand.py, reading the workloads table)."""
        bursts = warm_demand.recent_bursts(self.platform, self.blueprint, self.image, KIND,
                                           self.burst_window, self.demand_days)
        return {h.name: warm_demand.pool_target(self.size, self.grow_to, bursts.get(h.region, 0),
                                                sum(1 for other in hosts if other.region == h.region))
                for h in hosts}

    async def _update_targets(self) -> None:
        try:
            targets = await asyncio.to_thread(self.targets_for, self.hosts)
        except Exception as e:  # noqa: BLE001 (the pool keeps its targets meanwhile)
            self.log.warning("Warm server pool: could not read recent starts: %s", e)
            return
        for host, target in targets.items():
            if target != self.targets.get(host, self.size):
                self.log.info("Warm server pool: keeping %d on %s (bursts of starts within %g days)",
                              target, host, self.demand_days)
            self.targets[host] = target

    async def _refill_forever(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            measured = False
            while True:
                quiet = self._last_claim + self.refill_delay - time.monotonic()
                if quiet > 0 or self._cold_starts:
                    await asyncio.sleep(quiet if quiet > 0 else self.refill_delay)
                    continue
                if not measured:  # once the burst is over: it is all in the table now
                    await self._update_targets()
                    measured = True
                host = next((h for h in self.hosts if len(self.ready[h.name]) < self.targets.get(h.name, self.size)),
                            None)
                if host is None:
                    break
                try:
                    self.ready[host.name].append(await warm_server.create(self.platform, host, self.blueprint))
                    failures = 0
                except Exception as e:  # noqa: BLE001 (logged; the pool tries again later)
                    failures += 1
                    self.log.warning("Warm server pool: could not start a warm server on %s: %s", host.name, e)
                    await asyncio.sleep(min(300, 5 * 2 ** failures))

def start_with_hub() -> None:
    """Called from jupyterhub_config.py: start the pool as soon as the hub runs. The labdeck
    service reads the same file; it has no hub and starts nothing."""
    hub = running_hub()
    if hub is None:
        return
    try:
        loop = asyncio.get_running_loop()  # the hub loads its config inside its event loop
    except RuntimeError:
        return

    def start():
        from .spawner import LabdeckSpawner

        LabdeckSpawner.start_warm_pool(hub.config, hub.log)

    loop.call_soon(start)


