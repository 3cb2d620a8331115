"""What several benchmarks share: two hubs side by side (labdeck's and stock DockerSpawner's,
the same image and proxy), users on both, timed starts, stopping and waiting for containers
to be gone, and cleanup by label. Used by concurrent_starts.py and isolation.py.

Each benchmark names its own platform instance (e.g. ``labdeckbench2``): our containers carry
``labdeck.instance=<instance>``, the stock hub's carry ``labdeck.instance=<instance>-stock``
(a label our platform's reconciliation never looks at), so runs never touch each other.
"""

import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from spawner.bind_mounts import unmount_all_under  # noqa: E402
from benchmarks.cpu_accounting import container_cpu  # noqa: E402
from tests.hubtools import HubProcess, remove_test_containers, wait_for_warm_servers  # noqa: E402

STOCK_CONFIG = REPO / "benchmarks" / "stock_dockerspawner_config.py"
PASSWORD = "bench-password-1"


def ours_config(instance: str, *, cpus: float = 40, memory_gb: float = 64, gpus: dict | None = None, quota=None,
                extra: str = "") -> str:
    """Our hub's settings: its own instance, the local engine with room for the benchmark
    (``gpus``: a declared inventory such as {"A100": 1}, none by default)."""
    quota = quota or {"cpu": 2, "memory_gb": 4, "gpus": 0}
    return f"""
c.Platform.instance = {instance!r}
c.Resources.hosts = [
    {{"name": "local", "region": "default", "docker_url": "unix:///var/run/docker.sock",
      "cpus": {cpus}, "memory_gb": {memory_gb}, "gpus": {gpus or {}!r}}},
]
c.Quotas.default = {quota!r}
c.JupyterHub.cleanup_servers = True
{extra}
"""


def stock_config(instance: str) -> str:
    """Loaded after stock_dockerspawner_config.py: this benchmark's container names and label."""
    return f"""
c.DockerSpawner.name_template = "{instance}-stock-{{username}}"
c.DockerSpawner.extra_create_kwargs = {{"labels": {{"labdeck.instance": "{instance}-stock"}}}}
"""


STOCK, OURS = "stock DockerSpawner", "LabdeckSpawner"


def container_name(label: str, instance: str, user: str) -> str:
    """Name of a user's notebook container on either hub (simple lowercase user names)."""
    return f"{instance}-stock-{user}" if label == STOCK else f"{instance}-nb-{user}"


class HubPair:
    """Our hub and the stock hub, started side by side, with the same users on both."""

    def __init__(self, instance: str, ours_extra: str = "", pool_size: int = 0, **capacity):
        self.instance = instance
        self.pool_size = pool_size  # our warm pool's size (ours_extra sets it); 0: off
        self.work = Path(tempfile.mkdtemp(prefix=f"{instance}-"))
        extra = f"c.WarmPool.size = {pool_size}\n{ours_extra}"
        self.ours = HubProcess(self.work / "ours", ours_config(instance, extra=extra, **capacity))
        self.stock = HubProcess(self.work / "stock", stock_config(instance), config_file=STOCK_CONFIG)
        self.hubs = {STOCK: self.stock, OURS: self.ours}

    def start(self) -> None:
        self.cleanup()
        self.ours.start()
        self.stock.start()

    def add_users(self, names) -> None:
        from services.accounts import AccountStore

        store = AccountStore(self.ours.platform.db)
        for name in names:
            store.create(name, f"{name}@example.org", PASSWORD)
            for hub in (self.ours, self.stock):
                r = hub.api("POST", f"/users/{name}")
                if r.status_code not in (201, 409):
                    raise RuntimeError(f"cannot create user {name}: {r.status_code} {r.text}")

    def stop(self) -> None:
        for hub in (self.ours, self.stock):
            try:
                hub.stop()
            except Exception as e:  # the other hub must still stop
                print(f"stopping {hub.workdir.name} hub: {e}", file=sys.stderr)
        self.cleanup()
        unmount_all_under(str(self.work))  # our warm pool's shared folder

    def wait_for_warm_pool(self) -> None:
        """Wait until our warm pool is full, so that no refill runs during a measured start:
        its size, or more once it grew after a burst of starts (the pool's own reckoning)."""
        if self.pool_size:
            wait_for_full_pool(self.ours, self.instance)

    def finish(self, failed: bool) -> None:
        """Keep the hubs' logs when something failed (and say where), else remove the work folder."""
        if failed:
            print(f"hub logs: {self.ours.log_path} and {self.stock.log_path}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    def cleanup(self) -> int:
        """Remove every container of this benchmark (both hubs' labels)."""
        return remove_test_containers(self.instance) + remove_test_containers(f"{self.instance}-stock")

    def labels(self, label: str) -> str:
        return self.instance if label == OURS else f"{self.instance}-stock"


def wait_for_full_pool(hub: HubProcess, instance: str) -> None:
    """Wait until a hub's warm pool holds what it keeps now: its size, or more once it grew
    after a burst of starts (the pool's own reckoning, from the hub's workloads table)."""
    from spawner.warm_claims import SERVER_PORT
    from spawner.warm_pool import WarmPool

    pool = WarmPool(hub.platform, SERVER_PORT)
    wait_for_warm_servers(hub, sum(pool.targets_for(pool.local_hosts()).values()), instance)


def containers_left(instance_label: str) -> list:
    client = docker.from_env()
    try:
        return client.containers.list(all=True, filters={"label": f"labdeck.instance={instance_label}"})
    finally:
        client.close()


def wait_until_gone(instance_label: str, timeout: float = 120, name_prefix: str = "") -> None:
    """Wait until no container with this instance label (and name prefix) exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [c for c in containers_left(instance_label) if c.name.startswith(name_prefix)]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"containers of {instance_label} still there after {timeout}s")


class ReadyWatcher:
    """One thread polls the hub's user list (one request for all users) and notes, per user,
    the first time its server is ready, or that it failed (gone without being ready)."""

    def __init__(self, hub: HubProcess, users, interval: float = 0.05):
        self.hub, self.users, self.interval = hub, set(users), interval
        self.ready_at: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.requested: dict[str, float] = {}  # set by the starters: the POST has returned
        # when a POST answered 201; counted as the ready time only once the user list confirms
        # it (a spawn that failed but took long to clean up can be answered 201 too)
        self.answered_201: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        while not self._stop.is_set():
            try:
                r = self.hub.api("GET", "/users", params={"limit": 500}, timeout=30)
                now = time.time()
                r.raise_for_status()
                models = r.json()
                models = models.get("items", models) if isinstance(models, dict) else models
                for model in models:
                    name = model["name"]
                    if name not in self.users or name in self.ready_at or name in self.failed:
                        continue
                    server = (model.get("servers") or {}).get("")
                    if server and server.get("ready"):
                        # a 201 answer came first when the hub said ready within its slow_spawn_timeout
                        self.ready_at[name] = min(now, self.answered_201.get(name, now))
                    elif not server and not model.get("pending") and name in self.requested:
                        self.failed[name] = "the server is gone without becoming ready"
            except Exception as e:  # a slow answer under load is a data point, not a crash
                print(f"  (poll: {e})", file=sys.stderr)
            self._stop.wait(self.interval)

    def done(self) -> bool:
        return self.users <= set(self.ready_at) | set(self.failed)


def start_server(hub: HubProcess, user: str, options: dict, watcher: ReadyWatcher) -> float:
    """POST the start; returns when it was sent. Errors go to the watcher, which decides readiness."""
    t0 = time.time()
    try:
        r = hub.api("POST", f"/users/{user}/server", json=options, timeout=180)
    except Exception as e:
        watcher.failed[user] = f"POST failed: {e}"
        return t0
    if r.status_code == 201:
        watcher.answered_201[user] = time.time()
    elif r.status_code != 202:
        watcher.failed[user] = f"POST answered {r.status_code}: {r.text[:300]}"
    watcher.requested[user] = time.time()
    return t0


def stop_servers(hub: HubProcess, users, timeout: float = 120) -> None:
    """Stop the servers of these users, all at once, and wait until the hub says stopped."""
    users = list(users)

    def stop(user):
        r = hub.api("DELETE", f"/users/{user}/server", timeout=timeout)
        if r.status_code not in (202, 204, 400, 404):  # 400: not running
            print(f"  stopping {user}: {r.status_code} {r.text[:200]}", file=sys.stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = hub.server_model(user)
            if model is None:
                return
            time.sleep(0.2)

    with ThreadPoolExecutor(max(1, len(users))) as pool:
        list(pool.map(stop, users))


def server_container(client, name: str, timeout: float = 30):
    """The user's server container by its name, or None. A claimed warm server takes its
    user's name in the background, just after it answers: wait for that."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def timeline(client, name: str, t0: float) -> dict:
    """Where a start's time went, from Docker's own timestamps (seconds after ``t0``):
    container created, container started, server listening (its "is running at" log line);
    and the CPU seconds the container has used so far."""
    from benchmarks.start_latency import listening_time, parse_docker_time

    nan = float("nan")
    c = server_container(client, name)
    if c is None:
        return {"created": nan, "started": nan, "listening": nan, "cpu": nan, "warm": False}
    listening = listening_time(c)
    warm = bool(c.labels.get("labdeck.pool"))  # created and started before the POST: not this start's time
    return {
        "cpu": container_cpu(c.id),
        "created": nan if warm else parse_docker_time(c.attrs["Created"]) - t0,
        "started": nan if warm else parse_docker_time(c.attrs["State"]["StartedAt"]) - t0,
        "listening": (listening - t0) if listening else nan,
        "warm": warm,
    }


def timed_start(hub: HubProcess, user: str, options: dict, timeout: float = 120) -> tuple[float, float]:
    """Start one server and wait until the hub reports it ready, polling every 20 ms. A 201
    answer is the hub saying the server is up (JupyterHub answers 202 while it is pending), so
    its time counts as ready once the user's model confirms it (a spawn that failed can be
    answered 201 while it is cleaned up). Returns (when the POST was sent, seconds until
    ready); raises RuntimeError when the start fails or takes longer than ``timeout``."""
    t0 = time.time()
    r = hub.api("POST", f"/users/{user}/server", json=options, timeout=timeout)
    answered, status = time.time(), r.status_code
    if status not in (201, 202):
        raise RuntimeError(f"start of {user} answered {r.status_code}: {r.text[:300]}")
    while time.time() - t0 < timeout:
        r = hub.api("GET", f"/users/{user}")
        r.raise_for_status()
        model = r.json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return t0, (answered if status == 201 else time.time()) - t0
        if not server and not model.get("pending"):
            raise RuntimeError(f"{user}'s server is gone without becoming ready")
        time.sleep(0.02)
    raise RuntimeError(f"{user}'s server not ready after {timeout:.0f} s")
