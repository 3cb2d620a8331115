"""The warm server pool: servers started before anyone asks, handed out on "Start my Server".

A cold start creates a container, starts it and waits for Python to import JupyterLab: most
of a second of engine and CPU time, slower still when the engine is busy with someone's
snapshot. The pool keeps ``size`` containers per host already running ``labdeck-standby``
(images/notebook/), each with its imports done, waiting for a claim. A claim bind-mounts
the user's folder onto the container's slot (spawner/bind_mounts.py), renames the container
and sends the user's environment over a Unix socket: the server answers about 0.15 s later
and no engine call but the rename is on the user's path.

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
import json
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from docker.errors import DockerException, NotFound
from sqlalchemy import select
from traitlets import Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from services.ledger import Placement
from services.models import Workload, WorkloadState
from services.naming import new_workload_id
from services.options import WorkloadRequest
from services.paths import Mount
from services.recipe import POOL_LABEL, workload_labels

from . import bind_mounts

KIND = "notebook"
WORK = "/home/jovyan/work"
CONTROL = "/run/labdeck-standby"
SOCKET = "activate.sock"
STANDBY = "standby"


class WarmPoolError(Exception):
    """A claim that did not give the user a running server (the start goes cold instead)."""


@dataclass(frozen=True)
class WarmServer:
    workload_id: str  # also its container's labdeck.id and the name of its folders
    host: str
    container_id: str
    ip: str
    port: int
    secret: str
    slot: str  # host folder at /home/jovyan/work until the user's folder is mounted onto it
    control: str  # host folder at /run/labdeck-standby, holding the activation socket


@dataclass(frozen=True)
class Claim:
    """The connection to a claimed server, which says when the server accepts connections."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()

    async def listening(self, timeout: float) -> bool:
        """Whether the server said it listens within ``timeout`` (False: poll it instead)."""
        try:
            return await asyncio.wait_for(self.reader.readline(), timeout) == b"listening\n"
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            self.writer.close()


def usable_mounts(mounts) -> bool:
    """Whether a start's folders can be given to a warm server: none, or one writable folder at
    /home/jovyan/work (the only place a folder can arrive in a running container)."""
    return len(mounts) == 0 or (len(mounts) == 1 and mounts[0].container_path == WORK and not mounts[0].read_only)


class WarmPool(LoggingConfigurable):
    size = Integer(
        2,
        help="Warm servers kept waiting per local host (0: no pool). Each is an idle JupyterLab "
             "process, about 60 MB of memory and no CPU, and holds no resources of the ledger.",
    ).tag(config=True)

    image = Unicode(
        help="Image of the warm servers. Default: the first platform image offered to everyone "
             "for notebooks. It must have labdeck-standby (images/notebook/).",
    ).tag(config=True)

    refill_delay = Float(
        2.0,
        help="Seconds after the last claim before claimed servers are replaced, so that a burst "
             "of starts gets the CPU first.",
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
        self.dir = pool_dir(platform)
        self.ready: dict[str, list[WarmServer]] = {}  # host -> warm servers waiting for a claim
        self.hosts: list = []  # the hosts served (empty: the pool is off)
        self._last_claim = 0.0
        self._refill: asyncio.Task | None = None
        self._wake = asyncio.Event()

    # ---- what the pool serves ----

    @property
    def cpu_milli(self) -> int:
        return int(round(float(self.platform.quotas.request_defaults["cpu"]) * 1000))

    @property
    def memory_mb(self) -> int:
        return int(round(float(self.platform.quotas.request_defaults["memory_gb"]) * 1024))

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

    # ---- start-up ----

    async def start(self) -> None:
        """Check the machine, replace what an earlier hub left, and fill the pool."""
        hosts = [h for h in self.platform.resources.all_hosts() if h.is_local and h.online]
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
        self._wake.set()
        self._refill = self.platform.spawn_background(self._refill_forever())
        atexit.register(self._remove_waiting)
        self.log.info("Warm server pool: %d per host on %s, image %s", self.size,
                      ", ".join(h.name for h in hosts), self.image)

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
        engines = {h.docker_url: h.name for h in hosts}
        found = []
        for host_name in engines.values():
            found += await self.platform.docker.run(host_name, _list_pool_containers, self.platform.instance)
        ids = [c["Labels"].get("labdeck.id", "") for c in found]
        claimed = await asyncio.to_thread(self._claimed, ids)
        kept = set()
        for c, wid in zip(found, ids):
            if wid in claimed:
                if c.get("State") == "running":
                    kept.add(wid)
                continue  # stopped: the hub's poll ends it and removes the container
            host = c["Labels"].get("labdeck.host") or hosts[0].name
            try:
                await self.platform.docker.call(host, "remove_container", c["Id"], force=True)
            except NotFound:
                pass
        return kept

    def _remove_waiting(self) -> None:
        """At the hub's exit: remove the warm servers still waiting, so that a stopped platform
        leaves nothing running (the next hub starts new ones; a killed hub's are swept then)."""
        for host_name, waiting in self.ready.items():
            for warm in waiting:
                try:
                    self.platform.docker.client(host_name).remove_container(warm.container_id, force=True)
                    release(self.platform, warm.workload_id)
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
                        remove_folder(str(folder))
                    except OSError as e:  # left in place: never removed through a mount
                        self.log.warning("Warm server pool: could not remove %s: %s", folder, e)

    # ---- keeping it full ----

    async def _refill_forever(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                quiet = self._last_claim + self.refill_delay - time.monotonic()
                if quiet > 0:
                    await asyncio.sleep(quiet)
                    continue
                host = next((h for h in self.hosts if len(self.ready[h.name]) < self.size), None)
                if host is None:
                    break
                try:
                    self.ready[host.name].append(await self._new_warm_server(host))
                    failures = 0
                except Exception as e:  # noqa: BLE001 (logged; the pool tries again later)
                    failures += 1
                    self.log.warning("Warm server pool: could not start a warm server on %s: %s", host.name, e)
                    await asyncio.sleep(min(300, 5 * 2 ** failures))

    async def _new_warm_server(self, host) -> WarmServer:
        platform = self.platform
        workload_id = new_workload_id("nb")
        slot, control = str(self.dir / "slots" / workload_id), str(self.dir / "control" / workload_id)
        await asyncio.to_thread(self._make_folders, slot, control)
        secret = secrets.token_urlsafe(32)
        placement = Placement(workload_id, host.name, host.region, self.cpu_milli, self.memory_mb, None, ())
        labels = workload_labels(platform.instance, workload_id=workload_id, kind=KIND, user="", placement=placement)
        labels[POOL_LABEL] = STANDBY
        image_info = await platform.docker.call(host.name, "inspect_image", self.image)
        spec = platform.recipe.build(
            name=f"{platform.instance}-warm-{workload_id}", image=self.image,
            image_labels=(image_info.get("Config") or {}).get("Labels"), host=host, placement=placement,
            labels=labels, env={"LABDECK_STANDBY_SECRET": secret}, command=["labdeck-standby"],
            ports={self.port: None},
            mounts=[Mount(slot, WORK, False, "warm-pool", propagation="rslave"),
                    Mount(control, CONTROL, False, "warm-pool")],
        )
        container_id = None
        try:
            container_id = await platform.docker.run(host.name, spec.create)
            await platform.docker.call(host.name, "start", container_id)
            binding = (await platform.docker.call(host.name, "port", container_id, self.port))[0]
            await self._wait_until_listening(host.name, container_id, os.path.join(control, SOCKET))
        except BaseException:
            if container_id:
                await self._remove_container(host.name, container_id)
            await asyncio.to_thread(remove_folder, slot)
            await asyncio.to_thread(remove_folder, control)
            raise
        ip = binding["HostIp"]
        return WarmServer(workload_id, host.name, container_id, host.address if ip in ("0.0.0.0", "") else ip,
                          int(binding["HostPort"]), secret, slot, control)

    def _make_folders(self, slot: str, control: str) -> None:
        for folder, mode in ((slot, 0o755), (control, 0o700)):
            os.mkdir(folder, mode)
            os.chown(folder, self.uid, self.gid)

    async def _wait_until_listening(self, host_name: str, container_id: str, socket_path: str) -> None:
        deadline = time.monotonic() + self.standby_timeout
        next_inspect = time.monotonic() + 1.0
        while not os.path.exists(socket_path):
            if time.monotonic() > deadline:
                raise WarmPoolError(f"not ready within {self.standby_timeout:g} s")
            if time.monotonic() > next_inspect:
                next_inspect = time.monotonic() + 1.0
                info = await self.platform.docker.call(host_name, "inspect_container", container_id)
                if not info["State"]["Running"]:
                    logs = await self.platform.docker.call(host_name, "logs", container_id, tail=3)
                    raise WarmPoolError(f"exited: {logs.decode('utf-8', 'replace').strip()}")
            await asyncio.sleep(0.1)

    async def _remove_container(self, host_name: str, container_id: str) -> None:
        try:
            await self.platform.docker.call(host_name, "remove_container", container_id, force=True)
        except (DockerException, OSError) as e:
            self.log.warning("Warm server pool: could not remove container %s: %s", container_id[:12], e)

    # ---- claiming ----

    async def activate(self, warm: WarmServer, home: str | None, env: dict, argv: list[str]) -> "Claim":
        """Mount ``home`` (a host folder, or None) and hand the server its user's environment."""
        if home:
            await asyncio.to_thread(bind_mounts.bind, home, warm.slot)
        try:
            reader, writer = await asyncio.open_unix_connection(os.path.join(warm.control, SOCKET))
        except OSError as e:
            raise WarmPoolError(f"no answer from the warm server: {e}") from e
        try:
            message = {"secret": warm.secret, "env": env, "argv": argv, "home_mounted": bool(home)}
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), timeout=10))
            if not answer.get("ok"):
                raise WarmPoolError(answer.get("error") or "refused")
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            writer.close()
            raise WarmPoolError(f"no answer from the warm server: {e}") from e
        except WarmPoolError:
            writer.close()
            raise
        return Claim(reader, writer)

    async def discard(self, warm: WarmServer) -> None:
        """Remove a warm server that will not be used (claimed for nothing, or refused)."""
        await self._remove_container(warm.host, warm.container_id)
        await asyncio.to_thread(release, self.platform, warm.workload_id)


def release(platform, workload_id: str) -> None:
    """After the container of a claimed warm server ended: unmount its slot, remove its folders.
    Needs no pool: the hub may have restarted with the pool off."""
    for sub in ("slots", "control"):
        remove_folder(str(pool_dir(platform) / sub / workload_id))


def start_with_hub() -> None:
    """Called from jupyterhub_config.py: start the pool as soon as the hub runs. The labdeck
    service reads the same file; it has no hub and starts nothing."""
    hub_app = sys.modules.get("jupyterhub.app")  # not imported here: only the hub has it loaded
    if hub_app is None or not hub_app.JupyterHub.initialized():
        return
    try:
        loop = asyncio.get_running_loop()  # the hub loads its config inside its event loop
    except RuntimeError:
        return
    hub = hub_app.JupyterHub.instance()

    def start():
        from .spawner import LabdeckSpawner

        LabdeckSpawner.start_warm_pool(hub.config, hub.log)

    loop.call_soon(start)


def pool_dir(platform) -> Path:
    # without links: the mount table names mount points by their real paths, and a slot must be
    # recognised there before its folder is removed
    return Path(os.path.realpath(platform.data_dir)) / "warm-pool"


def _list_pool_containers(client, instance: str) -> list[dict]:
    return client.containers(all=True, filters={"label": [f"labdeck.instance={instance}", f"{POOL_LABEL}={STANDBY}"]})


def remove_folder(folder: str) -> None:
    """Remove a pool folder, unmounting the user's folder from it first. Never removes through
    a mount: if anything is still mounted there, it stays."""
    if not os.path.lexists(folder):
        return
    folder = os.path.join(os.path.realpath(os.path.dirname(folder)), os.path.basename(folder))
    if bind_mounts.is_mount_point(folder):
        bind_mounts.unbind(folder)
    mounts = bind_mounts.current_mounts()
    if any(m.mount_point == folder or m.mount_point.startswith(folder + "/") for m in mounts):
        raise bind_mounts.MountError(16, f"{folder} is still a mount point; left in place")
    shutil.rmtree(folder)
