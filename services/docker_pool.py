"""Docker calls off the event loop, in pools of threads, one client per thread and host.

DockerSpawner sends every call of every user through one thread; a slow call (an image
commit, a pull) then stalls everyone's start. Here short calls share a pool of
``Platform.docker_threads`` threads and long operations get a separate pool, whose threads
do not hold up the process's exit.
"""

import asyncio
import queue
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor

import docker
from docker.errors import DockerException

DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"


def make_client(docker_url: str = DEFAULT_DOCKER_URL, tls: dict | None = None, timeout: int = 60):
    """A low-level client for one Docker endpoint (``unix://`` or ``tcp://`` with TLS files)."""
    kwargs = {"base_url": docker_url, "version": "auto", "timeout": timeout}
    if tls:
        kwargs["tls"] = docker.tls.TLSConfig(
            client_cert=(tls["cert"], tls["key"]) if tls.get("cert") else None,
            ca_cert=tls.get("ca"),
            verify=bool(tls.get("ca")),
        )
    return docker.APIClient(**kwargs)


def bridge_gateway(docker_url: str = DEFAULT_DOCKER_URL, fallback: str = "172.17.0.1") -> str:
    """The host's address on Docker's default bridge: where containers reach the hub."""
    try:
        client = make_client(docker_url, timeout=5)
        net = client.inspect_network("bridge")
        for cfg in net.get("IPAM", {}).get("Config") or []:
            if cfg.get("Gateway"):
                return cfg["Gateway"]
    except (DockerException, OSError):
        pass
    return fallback


class DaemonThreadPool(Executor):
    """Like ThreadPoolExecutor (threads started on demand, up to ``max_workers``, then reused),
    but a process that stops does not wait for the calls under way: a stopping service would
    otherwise wait for a commit to the end, and the hub would kill it. The engine finishes a
    commit nobody waits for, and the restarted service adopts it (services.snapshots)."""

    def __init__(self, max_workers: int, thread_name_prefix: str):
        self._max_workers, self._prefix = max_workers, thread_name_prefix
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started = 0  # threads, never more than max_workers
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = Future()
        self._work.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._started < self._max_workers:
                    name = f"{self._prefix}_{self._started}"
                    self._started += 1
                    threading.Thread(target=self._worker, name=name, daemon=True).start()
        return future

    def _worker(self):
        while True:
            future, fn, args, kwargs = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as e:  # handed to the caller, as ThreadPoolExecutor does
                    future.set_exception(e)
            del future, fn, args, kwargs  # drop the references while idle
            self._idle.release()


class DockerPool:
    """Runs Docker API calls for any configured host in background threads."""

    def __init__(self, platform):
        self._platform = platform
        self._local = threading.local()
        self.short = ThreadPoolExecutor(
            max_workers=platform.docker_threads, thread_name_prefix="docker"
        )
        self.long = DaemonThreadPool(platform.long_docker_threads, thread_name_prefix="docker-long")

    def client(self, host_name: str, long: bool = False):
        """This thread's client for a host (created on first use); ``long``: one that waits
        ``long_docker_timeout`` for an answer instead of ``docker_timeout``."""
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if (host_name, long) not in clients:
            host = self._platform.resources.host(host_name)
            timeout = self._platform.long_docker_timeout if long else self._platform.docker_timeout
            clients[host_name, long] = make_client(host.docker_url, host.tls, timeout=timeout)
        return clients[host_name, long]

    def _call(self, host_name, method, args, kwargs, long=False):
        return getattr(self.client(host_name, long), method)(*args, **kwargs)

    def call(self, host_name: str, method: str, *args, **kwargs) -> asyncio.Future:
        """``await pool.call("local", "inspect_container", cid)`` — a short call."""
        return asyncio.wrap_future(
            self.short.submit(self._call, host_name, method, args, kwargs)
        )

    def call_long(self, host_name: str, method: str, *args, **kwargs) -> asyncio.Future:
        """Like :meth:`call`, on the pool kept for commits, pulls and builds."""
        return asyncio.wrap_future(
            self.long.submit(self._call, host_name, method, args, kwargs, True)
        )

    def run(self, host_name: str, func, *args) -> asyncio.Future:
        """Run ``func(client, *args)`` in the short pool (several calls in one thread hop)."""

        def job():
            return func(self.client(host_name), *args)

        return asyncio.wrap_future(self.short.submit(job))
