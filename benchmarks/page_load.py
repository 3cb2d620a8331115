"""Pages under load: simulated signed-in users browsing, following logs and polling progress.

    .venv/bin/python benchmarks/page_load.py [--users 50] [--duration 60] [--think 1.0]

One hub (the repository's jupyterhub_config.py, platform instance ``labdeckbench5``) with its
proxy and the labdeck service, all on 127.0.0.1. Prepared first: ``--users`` accounts in one
department, each with a finished job; ``--live-jobs`` of them with a job that prints a line
every 0.2 s for the whole run; a few with more finished jobs; one cache, shared with the
department, copying (throttled) all through the run, and a small ready one.

Then every user signs in through the hub's login form and, for ``--duration`` seconds, loops
with a think time of ``--think`` s (uniformly 0.5x-1.5x) over what a person in a browser, or a
script with a token, does: the service's list pages (jobs, debug, caches, images, centre) and
the hub's home page with the cookie; following a job's log (``api/jobs/ID/log?offset=N``) and
polling cache progress (``api/caches``), with the cookie for even-numbered users (the pages'
own scripts) and with an API token for odd-numbered ones; listing jobs and one's workloads by
token. All requests go through the proxy, as a browser's would.

Measured: latency of every request (p50/p95/p99 per kind and overall), errors (any status
other than 2xx/3xx, or an exception/timeout), and the CPU used during the run by the hub, the
proxy, the service (utime+stime from /proc), and by this load generator itself (it shares
the machine). Prints the table, then the goal checks last: p95 <= 200 ms, zero errors, hub
CPU under one core.
"""

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from yarl import URL

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import ours_config  # noqa: E402
from spawner.bind_mounts import unmount_all_under  # noqa: E402
from tests.hubtools import SERVICE, HubProcess, ServiceClient, remove_test_containers, wait_for  # noqa: E402

INSTANCE = "labdeckbench5"
GROUP = "loadtest"
PASSWORD = "bench-password-1"
IMAGE = "labdeck/notebook:latest"
JOB = {"image": IMAGE, "region": "default", "cpu": 0.25, "memory_gb": 0.25, "gpus": 0}
LIVE_COMMAND = 'i=0; while true; do i=$((i+1)); echo "step $i: loss=0.$((i % 97)) $(date +%T)"; sleep 0.2; done'
CONFIG = ours_config(INSTANCE, gpus={"A100": 2}, quota={"cpu": 4, "memory_gb": 8, "gpus": 1},
                     extra="c.CacheSettings.max_rate_mb = 1  # the shared cache copies all through the run")
PAGES = ("jobs", "debug", "caches", "images", "centre")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes and their CPU


def children(pid: int) -> list[int]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found += [int(p) for p in fh.read().split()]
    except OSError:
        pass
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def platform_pids(hub: HubProcess) -> dict[str, int]:
    """The hub, and its children the proxy and the labdeck service."""
    pids = {"hub": hub.proc.pid}
    for child in children(hub.proc.pid):
        line = cmdline(child)
        if "configurable-http-proxy" in line:
            pids["proxy"] = child
        elif "services.main" in line:
            pids["service"] = child
    missing = {"proxy", "service"} - set(pids)
    if missing:
        raise RuntimeError(f"cannot find the {', '.join(sorted(missing))} among the hub's children")
    return pids


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


# ---------------------------------------------------------------- preparation


def make_tree(root: Path, size_mb: int) -> None:
    """A data set to cache: small files and one large (sparse) one."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(100):
        (root / f"sample-{i:03d}.txt").write_text(f"sample {i}\n" * 50)
    with open(root / "weights.bin", "wb") as fh:
        fh.truncate(size_mb * 2**20)


def prepare(hub: HubProcess, args) -> list[dict]:
    """Accounts, a department, jobs (finished and live), caches; returns one dict per user."""
    from services.accounts import AccountStore

    store = AccountStore(hub.platform.db)
    names = [f"load{i:03d}{secrets.token_hex(2)}" for i in range(args.users)]
    for name in names:
        store.create(name, f"{name}@example.org", PASSWORD)
        hub.api("POST", f"/users/{name}").raise_for_status()
    hub.api("POST", f"/groups/{GROUP}")
    hub.api("POST", f"/groups/{GROUP}/users", json={"users": names}).raise_for_status()
    apis = [ServiceClient(hub, name) for name in names]

    retried = []

    def call(i: int, method: str, path: str, ok: int, **kwargs):
        """A preparing call; one that fails with a server error is tried again (and reported)."""
        for attempt in range(3):
            r = apis[i](method, path, **kwargs)
            if r.status_code == ok or r.status_code < 500:
                break
            retried.append(f"{method} {path}: {r.status_code}")
        if r.status_code != ok:
            raise RuntimeError(f"{method} {path} failed: {r.status_code} {r.text}")
        return r.json()

    def submit(i: int, command: str, **extra) -> str:
        body = {"name": f"job of {names[i]}", **JOB, "command": command, **extra}
        return call(i, "POST", "/jobs", 201, json=body)["id"]

    def state(i: int, job_id: str) -> str:
        return apis[i]("GET", f"/jobs/{job_id}").json()["state"]

    ended = {}  # user index -> one finished job
    for i in range(args.users):
        for _ in range(1 + (args.extra_jobs if i < 5 else 0)):
            ended[i] = submit(i, "echo hello; seq 1 300; echo done > /output/result.txt")
    for i, job_id in ended.items():
        wait_for(lambda: state(i, job_id) == "ended", 120, f"job {job_id} to end", interval=0.5)
    live = {}
    for i in range(min(args.live_jobs, args.users)):
        for attempt in range(3):
            job_id = submit(i, LIVE_COMMAND, time_limit_min=round((args.duration + 600) / 60, 1))
            if wait_for(lambda: state(i, job_id) in ("running", "ended") and state(i, job_id), 120,
                        f"job {job_id} to run", interval=0.5) == "running":
                live[i] = job_id
                break
            retried.append(f"live job {job_id}: {apis[i]('GET', f'/jobs/{job_id}').json()['end_reason']}")
        else:
            raise RuntimeError(f"no live job for {names[i]}")

    storage = Path(hub.platform.paths.user_storage(names[0]))
    make_tree(storage / "dataset", int(args.duration) + 120)
    make_tree(storage / "small", 1)
    cache_id = call(0, "POST", "/caches", 201,
                    json={"name": "dataset", "region": "default", "source": "~/dataset"})["id"]
    call(0, "POST", "/caches", 201, json={"name": "small", "region": "default", "source": "~/small"})
    call(0, "POST", f"/caches/{cache_id}/share", 200)
    call(0, "POST", f"/caches/{cache_id}/members", 200, json={"add": [{"kind": "group", "name": GROUP}]})
    if args.users > 1 and not apis[-1]("GET", "/caches").json()["department"]:
        raise RuntimeError("the shared cache is not visible to the department")
    for note in retried:
        print(f"  preparing: tried again after a server error: {note}", flush=True)
    return [{"name": name, "token": apis[i].token, "job": live.get(i) or ended[i], "live": i in live}
            for i, name in enumerate(names)]


# ---------------------------------------------------------------- the simulated users


class Recorder:
    def __init__(self):
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.redirects = 0
        self.log_bytes = 0  # what the followers read: shows the logs were live
        self.cache_states: set[str] = set()  # what the pollers saw of the shared cache

    def add(self, kind: str, seconds: float, error: str | None = None):
        self.latency.setdefault(kind, []).append(seconds)
        if error:
            self.errors.setdefault(kind, []).append(error)


async def sign_in(session: aiohttp.ClientSession, base: str, name: str) -> None:
    """The hub's login form, then the service's OAuth hand-shake (as a browser goes through it)."""
    async with session.get(f"{base}/hub/login") as r:
        r.raise_for_status()
    xsrf = session.cookie_jar.filter_cookies(URL(f"{base}/hub/login")).get("_xsrf")
    async with session.post(f"{base}/hub/login", allow_redirects=False,
                            data={"username": name, "password": PASSWORD, "_xsrf": xsrf.value if xsrf else ""}) as r:
        if r.status != 302:
            raise RuntimeError(f"sign-in of {name} failed: {r.status}")
    async with session.get(f"{base}{SERVICE}jobs") as r:  # follows the OAuth redirects
        if r.status != 200 or not str(r.url).endswith(f"{SERVICE}jobs"):
            raise RuntimeError(f"service sign-in of {name} failed: {r.status} at {r.url}")


class User:
    def __init__(self, index: int, info: dict, base: str, recorder: Recorder, think: float, timeout: float):
        self.index, self.info, self.base, self.rec = index, info, base, recorder
        self.think, self.rng = think, random.Random(index)
        self.by_token = index % 2 == 1
        self.offset: int | None = None
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                             timeout=aiohttp.ClientTimeout(total=timeout))

    async def request(self, kind: str, path: str, token: bool = False):
        headers = {"Authorization": f"token {self.info['token']}"} if token else {}
        kind = f"{kind} ({'token' if token else 'cookie'})"
        t0 = time.perf_counter()
        try:
            async with self.session.get(f"{self.base}{path}", headers=headers, allow_redirects=False) as r:
                body = await r.read()
                seconds = time.perf_counter() - t0
                if 300 <= r.status < 400:
                    self.rec.redirects += 1
                error = None if r.status < 400 else f"{r.status} {path}: {body[:200]!r}"
                self.rec.add(kind, seconds, error)
                return r.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.rec.add(kind, time.perf_counter() - t0, f"{type(e).__name__} {path}: {e}")
            return None, b""

    async def follow_log(self):
        job = self.info["job"]
        query = "" if self.offset is None else f"?offset={self.offset}"
        status, body = await self.request("api job log", f"{SERVICE}api/jobs/{job}/log{query}", self.by_token)
        if status == 200:
            chunk = json.loads(body)
            self.offset = chunk["offset"]
            self.rec.log_bytes += len(chunk["text"])

    async def poll_caches(self):
        status, body = await self.request("api caches", f"{SERVICE}api/caches", self.by_token)
        if status == 200:
            self.rec.cache_states |= {c["state"] for c in json.loads(body)["department"]}

    async def step(self):
        roll = self.rng.random()
        if roll < 0.35:
            page = self.rng.choice(PAGES)
            await self.request(f"page {page}", f"{SERVICE}{page}")
        elif roll < 0.45:
            await self.request("hub home", "/hub/home")
        elif roll < 0.70:
            await self.follow_log()
        elif roll < 0.90:
            await self.poll_caches()
        elif roll < 0.95:
            await self.request("api jobs", f"{SERVICE}api/jobs", token=True)
        else:
            await self.request("api me/workloads", f"{SERVICE}api/me/workloads", token=True)

    async def run(self, until: float):
        await asyncio.sleep(self.rng.uniform(0, self.think))  # not all at once
        while time.monotonic() < until:
            await self.step()
            await asyncio.sleep(self.think * self.rng.uniform(0.5, 1.5))


async def load(hub: HubProcess, users: list[dict], args) -> tuple[Recorder, dict, float]:
    rec = Recorder()
    people = [User(i, info, hub.url, rec, args.think, args.timeout) for i, info in enumerate(users)]
    try:
        gate = asyncio.Semaphore(4)  # sign-ins hash passwords: not all at once

        async def signed_in(p):
            async with gate:
                await sign_in(p.session, hub.url, p.info["name"])

        await asyncio.gather(*(signed_in(p) for p in people))
        pids = platform_pids(hub)
        before = {k: cpu_seconds(pid) for k, pid in pids.items()}
        own_before = sum(os.times()[:2])
        start = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(p.run(start + args.duration) for p in people)),
                               args.duration + args.timeout + 30)
        wall = time.monotonic() - start
        cpu = {k: (cpu_seconds(pid) - before[k]) / wall for k, pid in pids.items()}
        cpu["load generator"] = (sum(os.times()[:2]) - own_before) / wall
        return rec, cpu, wall
    finally:
        await asyncio.gather(*(p.session.close() for p in people))


# ---------------------------------------------------------------- report


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


def report(rec: Recorder, cpu: dict, wall: float) -> None:
    print(f"\n{'request':34s} {'count':>6s} {'errors':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}")
    every = []
    for kind in sorted(rec.latency):
        values = sorted(rec.latency[kind])
        every += values
        print(f"{kind:34s} {len(values):6d} {len(rec.errors.get(kind, [])):6d} "
              f"{1000 * percentile(values, 50):8.1f} {1000 * percentile(values, 95):8.1f} "
              f"{1000 * percentile(values, 99):8.1f} {1000 * values[-1]:8.1f}")
    every.sort()
    errors = sum(len(e) for e in rec.errors.values())
    print(f"{'all':34s} {len(every):6d} {errors:6d} {1000 * percentile(every, 50):8.1f} "
          f"{1000 * percentile(every, 95):8.1f} {1000 * percentile(every, 99):8.1f} {1000 * every[-1]:8.1f}")
    print(f"\n{len(every) / wall:.1f} requests/s over {wall:.0f} s; redirects: {rec.redirects}; "
          f"log text followed: {rec.log_bytes / 1024:.0f} KiB; shared cache seen as: "
          f"{', '.join(sorted(rec.cache_states)) or 'nothing'}")
    print("CPU (cores) during the run: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    for kind, messages in rec.errors.items():
        for message in messages[:3]:
            print(f"  error {kind}: {message}")
    p95 = percentile(every, 95)
    print()
    print(f"goal p95 <= 200 ms: {1000 * p95:.0f} ms -> {'met' if p95 <= 0.2 else 'MISSED'}")
    print(f"goal zero errors: {errors} -> {'met' if errors == 0 else 'MISSED'}")
    print(f"goal hub CPU under one core: {cpu['hub']:.2f} -> {'met' if cpu['hub'] < 1 else 'MISSED'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="simulated signed-in users (default 50)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (default 60)")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time between requests, s (default 1)")
    parser.add_argument("--live-jobs", type=int, default=5, help="users whose job prints lines all along (default 5)")
    parser.add_argument("--extra-jobs", type=int, default=4,
                        help="more finished jobs for the first 5 users (default 4)")
    parser.add_argument("--timeout", type=float, default=30, help="seconds before a request counts as failed")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labdeck-bench5-"))
    hub = HubProcess(work / "hub", CONFIG)
    remove_test_containers(INSTANCE)
    try:
        hub.start()
        print(f"preparing {args.users} users, their jobs and caches", flush=True)
        users = prepare(hub, args)
        print(f"{args.users} users for {args.duration:g} s, think time {args.think:g} s", flush=True)
        rec, cpu, wall = asyncio.run(load(hub, users, args))
    finally:
        hub.stop()
        remove_test_containers(INSTANCE)
        unmount_all_under(str(work))  # the warm pool's shared folder
        shutil.rmtree(hub.data_dir, ignore_errors=True)  # job folders, caches; hub.log stays
    report(rec, cpu, wall)


if __name__ == "__main__":
    main()
