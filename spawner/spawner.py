"""LabdeckSpawner: "Start my Server" with the image, CPU, memory, GPUs, region and path
mappings the user chose, in a container built by the platform's one recipe.

What it adds to DockerSpawner:
- options from the form or the REST API go through the one validator; every refusal is an
  HTTP 400 naming the field, raised before anything is created or allocated;
- resources come from the shared ledger (atomic across processes) and go back on stop;
- Docker calls run in the platform's thread pools, on the host the ledger chose;
- spawn progress events, and readiness noticed within ~0.1 s of the server answering;
- start slots: about one server starts per core of its host at a time, the rest queue in
  arrival order and see their place in line (services/start_slots.py says why);
- a warm server pool: a start with the pool's options gets a server that is already running
  (spawner/warm_pool.py says how).
"""

import asyncio
import inspect
import math
import os
import time

import aiohttp
from docker.errors import APIError, DockerException
from dockerspawner import DockerSpawner
from jupyterhub.utils import url_path_join
from tornado import web
from traitlets import Dict, Float, Integer, Unicode, default

from services.errors import OptionError
from services.identity import Requester
from services.naming import escape_name
from services.options import WorkloadRequest, validate_request
from services.platform import get_platform
from services.progress import ProgressLog
from services.reconcile import reconcile
from services.recipe import RecipeError, workload_labels
from services.repository import ensure_image
from services.start_slots import Slot, StartSlots
from services.workloads import end_workload, mark_running, open_workload

from .form import options_from_form, render_options_form
from .server_address import ServerAddress, ports_to_publish
from .warm_claims import SERVER_PORT, WarmClaims
from .warm_server import WarmServer, release

KIND = "notebook"
# Jupyter's runtime files (cookie secret, server info, kernels' connection files) live in the
# container's /dev/shm: a server writes three at start-up, and with someone's snapshot filling
# the disk, creating a file there took 4.5 ms (median) to 34 ms, against 0.3 ms in memory.
RUNTIME_DIR = "/dev/shm/jupyter-runtime"


class LabdeckSpawner(ServerAddress, WarmClaims, DockerSpawner):
    readiness_interval = Float(
        0.1,
        help="Seconds between readiness checks of a starting server. The hub's own check backs "
             "off up to seconds; ours returns as soon as the server answers.",
    ).tag(config=True)

    start_slots_per_core = Float(
        1.0,
        help="Servers that may start at once on a host, per CPU core Docker reports for it "
             "(rounded up). Further starts wait in arrival order and see their place in line on "
             "the progress page: the first get their server sooner, the last about as soon as without slots. "
             "0 starts every server at once.",
    ).tag(config=True)

    start_slots = Dict(
        value_trait=Integer(),
        help="Per host name: how many servers may start there at once, instead of "
             "start_slots_per_core times its cores (0: no limit).",
    ).tag(config=True)

    start_slot_hold = Float(
        5.0,
        help="Seconds a start keeps its slot at most, so that one waiting on something other than "
             "the CPU (a slow mount, an image that never answers) does not hold up the line.",
    ).tag(config=True)

    workload_id = Unicode("", help="Platform task ID of the running server (persisted in state).")
    host_name = Unicode("", help="Host the server runs on (persisted in state).")
    warm_slot = Unicode("", help="Warm pool slot the server's folder is mounted on, if it came "
                                 "from the pool (persisted in state; unmounted after it stops).")

    _reconciled = None  # one reconciliation per hub process, shared by all spawners
    _start_slots: dict[str, StartSlots] = {}  # host name -> its slots, shared likewise

    # ---- platform wiring ----

    @property
    def platform(self):
        return get_platform(self.config, self.log)

    @property
    def requester(self) -> Requester:
        return Requester.from_hub_user(self.user)

    @default("port")
    def _default_port(self):
        return SERVER_PORT

    @default("remove")
    def _default_remove(self):
        return True  # options may change at every start: always a fresh container

    @default("options_form")
    def _default_options_form(self):
        return render_options_form

    @default("options_from_form")
    def _default_options_from_form(self):
        return options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return LabdeckSpawner._apply_options

    def _object_name_default(self):
        name = f"{self.platform.instance}-nb-{escape_name(self.user.name)}"
        if self.name:
            name += f"--{escape_name(self.name)}"
        return name

    @property
    def client(self):
        return self.platform.docker.client(self.host_name or self.platform.resources.all_hosts()[0].name)

    def docker(self, method, *args, **kwargs):
        host = self.host_name or self.platform.resources.all_hosts()[0].name
        return self.platform.docker.call(host, method, *args, **kwargs)

    async def ensure_reconciled(self):
        """Repair the ledger from Docker once per hub process, before the first allocation."""
        cls = LabdeckSpawner
        if cls._reconciled is None:
            cls._reconciled = asyncio.ensure_future(reconcile(self.platform, kinds=(KIND,), force=True))
        try:
            await cls._reconciled
        except Exception:
            self.log.exception("Reconciliation failed; will retry on the next spawn")
            cls._reconciled = None

    # ---- state ----

    def load_state(self, state):
        super().load_state(state)
        self.workload_id = state.get("workload_id", "")
        self.host_name = state.get("host_name", "")
        self.warm_slot = state.get("warm_slot", "")

    def get_state(self):
        state = super().get_state()
        if self.workload_id:
            state["workload_id"] = self.workload_id
            state["host_name"] = self.host_name
        if self.warm_slot:
            state["warm_slot"] = self.warm_slot
        return state

    # clear_state() is left alone on purpose: DockerSpawner.stop() calls it before the
    # post-stop hook, which still needs workload_id to end the workload and free its resources.

    # ---- options: validate, then allocate ----

    @staticmethod
    async def _apply_options(spawner, user_options):
        await spawner._validate_and_allocate(user_options)

    async def _validate_and_allocate(self, user_options):
        progress = self.progress_log
        progress.reset()
        await self.ensure_reconciled()
        platform, requester = self.platform, self.requester
        try:
            # path checks touch the file system and the ledger may wait for a database lock:
            # neither may block the hub's event loop
            request = await asyncio.to_thread(validate_request, platform, requester, KIND, user_options)
            workload, placement, warm = await self._open_with_warm_server(request)
        except OptionError as e:
            self.log.info("Refused options for %s: %s", self._log_name, e)
            raise web.HTTPError(400, str(e)) from None
        self.workload_id, self.host_name = workload.id, placement.host
        self._request, self._placement, self._warm = request, placement, warm
        self.image = request.image.name
        gpus = f", GPUs {placement.gpu_model} #{','.join(map(str, placement.gpu_indices))}" if placement.gpus else ""
        cores = placement.cpu_milli / 1000
        progress.add(10, f"Reserved {cores:g} core{'' if cores == 1 else 's'}, "
                         f"{placement.memory_mb / 1024:g} GB{gpus} on host {placement.host} "
                         f"(region {placement.region})")

    def _open(self, platform, requester, request: WorkloadRequest, previous_workload, warm: WarmServer | None):
        if previous_workload:
            # an allocation left by an earlier failed start of this server goes back first
            end_workload(platform, previous_workload, "replaced by a new start")
        if warm is None:
            return open_workload(platform, requester, request, name=self.name)
        return open_workload(platform, requester, request, name=self.name,
                             workload_id=warm.workload_id, prefer_host=warm.host)

    async def check_allowed(self, image):
        try:
            return self.platform.catalog.check(self.requester, KIND, image).name
        except OptionError as e:
            raise web.HTTPError(400, str(e)) from None

    # ---- progress ----

    @property
    def progress_log(self) -> ProgressLog:
        if getattr(self, "_progress_log", None) is None:
            self._progress_log = ProgressLog()
        return self._progress_log

    async def progress(self):
        async for event in self.progress_log.follow():
            yield event

    # ---- start / stop ----

    async def pull_image(self, image):
        """Make sure the host has the image: pulled from the registry when one is configured."""
        try:
            await ensure_image(self.platform, self.host_name, image)
        except OptionError as e:
            raise web.HTTPError(400, str(e)) from None

    async def create_object(self):
        platform = self.platform
        host = platform.resources.host(self.host_name)
        image_info = await self.docker("inspect_image", self.image)
        labels = workload_labels(platform.instance, workload_id=self.workload_id, kind=KIND,
                                 user=self.user.name, placement=self._placement)
        labels["labdeck.server_name"] = self.name
        try:
            spec = platform.recipe.build(
                name=self.object_name, image=self.image,
                image_labels=(image_info.get("Config") or {}).get("Labels"), host=host,
                placement=self._placement, labels=labels, mounts=self._request.mounts,
                env=self.get_env(), command=await self.get_command(), ports=ports_to_publish(host, self.port),
            )
        except RecipeError as e:
            raise web.HTTPError(400, f"image: {e}") from None
        self.progress_log.add(30, f"Creating container {self.object_name} from {self.image}")
        container_id = await platform.docker.run(self.host_name, spec.create)
        return {"Id": container_id}

    async def start_object(self):
        # the slot is taken here, not earlier: creating containers costs the engine, not the CPU
        # the servers need, so every queued container is created meanwhile
        self._slot = await self._take_start_slot()
        self.progress_log.add(50, "Starting container")
        await super().start_object()

    async def start(self):
        if not getattr(self, "_placement", None):
            raise web.HTTPError(400, "options: the server was started without validated options")
        warm, self._warm = self._warm, None
        if warm is not None:
            served = await self._start_warm_or_give_up(warm)
            if served is not None:
                return served
        self._slot = None
        pool = self._warm_pool
        if pool is not None:
            pool.cold_start_began()
        try:
            ip, port = await super().start()
            await asyncio.to_thread(mark_running, self.platform, self.workload_id, self.object_name, self.object_id)
            self.progress_log.add(70, "Container started; waiting for JupyterLab to answer")
            await self._wait_until_answering(ip, port)
        finally:
            if self._slot is not None:
                self._slot.release()
            if pool is not None:
                pool.cold_start_ended()
        self.progress_log.add(95, "JupyterLab is answering")
        self.progress_log.finish()
        return ip, port

    async def _take_start_slot(self) -> Slot:
        slots = await self._host_start_slots()

        def waiting(ahead: int):
            self.progress_log.add(20, f"Waiting for a start slot on host {self.host_name}: "
                                      f"{ahead} server{'s' if ahead != 1 else ''} starting ahead of yours")

        return await slots.acquire(hold=self.start_slot_hold or None, on_wait=waiting)

    async def _host_start_slots(self) -> StartSlots:
        slots = LabdeckSpawner._start_slots.get(self.host_name)
        if slots is None:
            limit = self.start_slots.get(self.host_name)
            if limit is None:
                limit = math.ceil(await self._host_cores() * self.start_slots_per_core)
            slots = LabdeckSpawner._start_slots.setdefault(self.host_name, StartSlots(limit))
        return slots

    async def _host_cores(self) -> int:
        try:
            cores = (await self.docker("info")).get("NCPU")
        except (DockerException, OSError) as e:
            self.log.warning("Docker on %s did not say its cores (%s); counting this machine's", self.host_name, e)
            cores = None
        return cores or os.cpu_count() or 1

    async def _wait_until_answering(self, ip, port):
        """Poll the server every ``readiness_interval`` until it answers, the container dies,
        or http_timeout passes, so the hub's own (backing-off) check succeeds at once."""
        url = url_path_join(f"http://{ip}:{port}", self.server.base_url, "api")
        deadline = time.monotonic() + self.http_timeout
        next_inspect = 0.0
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                try:
                    async with session.get(url, allow_redirects=False) as resp:
                        if resp.status < 500:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                if time.monotonic() >= next_inspect:
                    next_inspect = time.monotonic() + 1.0
                    await self._fail_if_exited()
                await asyncio.sleep(self.readiness_interval)
        raise web.HTTPError(500, f"The server did not answer within {self.http_timeout} seconds")

    async def _fail_if_exited(self):
        info = await self.get_object()
        if info is None or info["State"]["Running"]:
            return
        logs = await self.docker("logs", self.object_id, tail=8)
        tail = logs.decode("utf-8", "replace").strip().splitlines()[-3:] if logs else []
        raise web.HTTPError(
            500, f"The server exited during start-up (exit code {info['State']['ExitCode']}): "
                 + (" | ".join(tail) or "no output")
        )

    def get_env(self):
        env = super().get_env()
        env.setdefault("JUPYTER_RUNTIME_DIR", RUNTIME_DIR)  # c.Spawner.environment may set another
        return env

    async def get_object(self):
        """The container, by its ID once known: a claimed warm server is renamed in the
        background (spawner/warm_claims.py), so its name may still be the pool's."""
        if self.object_id:
            try:
                return await self.docker("inspect_container", self.object_id)
            except APIError as e:
                if e.status_code not in (404, 500):  # as DockerSpawner: gone, or on an unhealthy node
                    raise
        return await super().get_object()  # by name; forgets the ID when that is gone too

    async def poll(self):
        await self.ensure_reconciled()  # the hub polls running servers first thing after a restart
        status = await super().poll()
        if status is not None and self.workload_id and not getattr(self, "_end_reason", None):
            self._end_reason = "stopped: container gone" if status == 0 else f"stopped: {status}"
        return status

    async def stop(self, now=False):
        if not getattr(self, "_end_reason", None):
            self._end_reason = "stopped"
        await super().stop(now=now)

    async def _remove_leftover_container(self):
        """A container that died on its own is not removed by stop(); do it here."""
        try:
            info = await self.get_object()
            if info is not None and not info["State"]["Running"]:
                await self.remove_object()
        except APIError as e:
            self.log.warning("Could not remove stopped container %s: %s", self.object_name, e)

    async def run_post_stop_hook(self):
        if self.workload_id:
            await self._remove_leftover_container()
            reason = getattr(self, "_end_reason", None) or "stopped"
            await asyncio.to_thread(end_workload, self.platform, self.workload_id, reason)
        if self.warm_slot:
            await asyncio.to_thread(release, self.platform, self.warm_slot)
        self.workload_id = self.host_name = self.warm_slot = ""
        self._end_reason = None
        self._placement = None
        self.progress_log.finish()
        result = super().run_post_stop_hook()
        if inspect.isawaitable(result):
            await result

