"""Isolation: does one user's slow operation stall another's start? Stock DockerSpawner vs
LabdeckSpawner, the same image and hub settings.

    .venv/bin/python benchmarks/isolation.py [--starts 8]

Two hubs run side by side (instance ``labdeckbench3``). Measured, alternating between the hubs:
1. unloaded: single server starts (POST /hub/api/users/NAME/server -> the hub reports ready,
   polled every 20 ms), and on our side jobs (POST .../api/jobs -> the job's container running,
   from the job's own submitted_at/started_at);
2. loaded: the same, while the engine is busy with both
   (a) "save snapshot" of a debug session whose writable layer holds 1 GB (written with
       ``head -c 1G /dev/urandom``): POSTed to our service's snapshot API, i.e. a ``docker commit``
       on the service's pool for long Docker operations; and
   (b) an image build (``docker build --no-cache`` of a Dockerfile that writes --build-mb MB of
       random data; there is no registry to pull from).
   The one load serves both hubs: stock JupyterHub has no snapshot, and what would run there
   is the same ``docker commit`` on the same engine. Whenever the commit or the build
   finishes, another starts, so every loaded start runs while both are under way.
3. in both phases, the engine alone: a bare create + start of the same image (Docker's API,
   no platform, no hub), the floor under every start and job on that engine.
Prints both phases and the loaded/unloaded ratio of the median start latency for each spawner
(goal for ours: <= 1.25, last), stock's, jobs' and the engine alone's before it. The server's own
start-up ("listening", from its log) is shown too: with the engine alone, it tells the machine's
and the engine's slowdown apart from the spawner's.
Our hub keeps its warm server pool at the product's default size (2; --pool-size), and each
start, on either hub, waits until the pool is full again: the figure is a start in a pool's
steady state. Under load the pool takes longer to refill, so a burst of more starts than the
pool holds would go cold.
It ends by itself (a few minutes) and removes its containers, the images it built and the
snapshots it saved (by label and name).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import HubPair, OURS, STOCK, container_name, timed_start, timeline  # noqa: E402
from benchmarks.cpu_accounting import engine_cpu_weight  # noqa: E402
from benchmarks.start_latency import summary  # noqa: E402
from tests.hubtools import ServiceClient, wait_for  # noqa: E402

INSTANCE = "labdeckbench3"
OPTIONS = {STOCK: {}, OURS: {"image": "labdeck/notebook:latest", "cpu": 1, "memory_gb": 1, "gpus": 0}}
JOB = {"name": "isolation probe", "image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5,
       "memory_gb": 0.5, "gpus": 0, "command": "sleep 1"}
DEBUG = {"name": "big layer", "image": "labdeck/debug:latest", "region": "default", "cpu": 1, "memory_gb": 2,
         "gpus": 0, "ports": 1, "password": "bench-debug-1"}
BUILD_TAG = f"{INSTANCE}-build"
SNAPSHOT_NAME = "isolation-big"


def parse_utc(text: str) -> float:
    return datetime.fromisoformat(str(text)).replace(tzinfo=timezone.utc).timestamp()


# ---- what is measured ----

def one_start(pair, label, user, client, timeout) -> dict:
    hub = pair.hubs[label]
    pair.wait_for_warm_pool()
    try:
        t0, ready = timed_start(hub, user, OPTIONS[label], timeout)
        steps = timeline(client, container_name(label, pair.instance, user), t0)
        result = {"label": label, "t0": t0, "end": t0 + ready, "ready": ready, "inside": steps["listening"],
                  "running": steps["started"], "cpu": steps["cpu"], "warm": steps["warm"]}
    except Exception as e:
        result = {"label": label, "t0": time.time(), "end": time.time(), "error": str(e)}
    try:
        hub.stop_server(user)
    except AssertionError as e:
        result.setdefault("error", f"stop: {e}")
    return result


def one_bare(low) -> dict:
    """Seconds for the engine alone to create and start a container of the image (a sleeping one).
    Labelled labdeck.bench, not as the instance: the service must not see it."""
    t0 = time.time()
    try:
        cid = low.create_container(OPTIONS[OURS]["image"], entrypoint=["sleep"], command=["60"],
                                   labels={"labdeck.bench": INSTANCE}, detach=True)["Id"]
        low.start(cid)
        end = time.time()
        low.remove_container(cid, force=True)
    except docker.errors.APIError as e:
        return {"t0": t0, "end": time.time(), "error": f"bare create+start: {e}"}
    return {"t0": t0, "end": end, "ready": end - t0}


def one_job(api) -> dict:
    """Submit a short job; seconds from submission to its container running (service's timestamps)."""
    t0 = time.time()
    r = api("POST", "/jobs", json=JOB)
    if r.status_code != 201:
        return {"t0": t0, "end": time.time(), "error": f"submit answered {r.status_code}: {r.text[:200]}"}
    job = r.json()
    try:
        job = wait_for(lambda: (j := api("GET", f"/jobs/{job['id']}").json())["started_at"] and j, 60,
                       f"job {job['id']} to run", interval=0.1)
    except AssertionError as e:
        return {"t0": t0, "end": time.time(), "error": str(e)}
    latency = parse_utc(job["started_at"]) - parse_utc(job["submitted_at"])
    return {"t0": t0, "end": t0 + latency, "ready": latency}


# ---- the load ----

class Load:
    """Keeps a snapshot commit and an image build running until stopped; logs each one's span."""

    def __init__(self, pair, api, session_id, build_mb):
        self.pair, self.api, self.session_id, self.build_mb = pair, api, session_id, build_mb
        self.spans = {"snapshot": [], "build": []}
        self.errors = []
        self.build_dir = Path(tempfile.mkdtemp(prefix=f"{INSTANCE}-build-"))
        (self.build_dir / "Dockerfile").write_text(
            "FROM labdeck/notebook:latest\nUSER root\n"
            f"RUN head -c {build_mb}M /dev/urandom > /opt/blob && sha256sum /opt/blob > /opt/blob.sha256\n"
            f"LABEL labdeck.instance={INSTANCE}\n"
        )
        self.current = {}  # kind -> when the commit or build under way began
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True) for kind in self.spans]
        self.started_at = None

    def start(self):
        self.started_at = time.time()
        for t in self.threads:
            t.start()

    def stop(self, timeout=300):
        """Let the running commit and build finish (none is left half-done), then return."""
        self.stopping.set()
        for t in self.threads:
            t.join(timeout)

    def _loop(self, kind):
        n = 0
        while not self.stopping.is_set():
            n += 1
            t0 = self.current[kind] = time.time()
            try:
                self._snapshot(n) if kind == "snapshot" else self._build(n)
            except Exception as e:
                self.errors.append(f"{kind} {n}: {e}")
                return
            finally:
                self.current.pop(kind, None)
            self.spans[kind].append((t0, time.time()))

    def _snapshot(self, n):
        r = self.api("POST", f"/debug/{self.session_id}/snapshot",
                     json={"name": SNAPSHOT_NAME, "tag": f"t{n}", "kind": "debug"})
        if r.status_code != 202:
            raise RuntimeError(f"snapshot answered {r.status_code}: {r.text[:200]}")
        image_id = r.json()["id"]
        image = wait_for(lambda: (i := self.api("GET", f"/images/{image_id}").json())["state"] != "saving" and i,
                         600, "the snapshot to be saved", interval=0.1)
        if image["state"] != "saved":
            raise RuntimeError(f"snapshot {image['state']}: {image.get('error')}")

    def _build(self, n):
        subprocess.run(["docker", "build", "--no-cache", "--force-rm", "-q", "-t", f"{BUILD_TAG}:b{n}",
                        str(self.build_dir)], check=True, capture_output=True, timeout=600)

    def window_ok(self, t0, end) -> bool:
        """A commit and a build were under way during all of [t0, end] (one of a kind following
        the previous within a second counts as continuing it)."""
        now = time.time()
        for kind, spans in self.spans.items():
            spans = sorted(spans + ([(self.current[kind], float("inf"))] if kind in self.current else []))
            merged = []
            for a, b in spans:
                if merged and a - merged[-1][1] <= 1.0:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], b))
                else:
                    merged.append((a, b))
            if not any(a <= t0 and min(end, now) <= b for a, b in merged):
                return False
        return True

    def describe(self) -> str:
        parts = []
        for kind, spans in self.spans.items():
            times = ", ".join(f"{b - a:.1f}" for a, b in spans)
            parts.append(f"{kind}s took {times or '-'} s")
        return "; ".join(parts)


def make_big_session(pair, api, client, size_gb) -> str:
    r = api("POST", "/debug", json=DEBUG)
    if r.status_code != 201:
        raise RuntimeError(f"debug session answered {r.status_code}: {r.text[:300]}")
    session_id = r.json()["id"]

    def running():
        s = api("GET", f"/debug/{session_id}").json()
        if s["state"] == "ended":
            raise RuntimeError(f"debug session ended: {s.get('end_reason')}")
        return s["state"] == "running"

    wait_for(running, 120, "the debug session to run")
    (container,) = client.containers.list(filters={"label": [f"labdeck.instance={pair.instance}",
                                                             f"labdeck.id={session_id}"]})
    t0 = time.time()
    code, out = container.exec_run(["sh", "-c", f"head -c {size_gb}G /dev/urandom > /home/jovyan/big.bin && "
                                                "du -m /home/jovyan/big.bin"], user="jovyan")
    if code != 0:
        raise RuntimeError(f"writing the big file failed: {out.decode(errors='replace')[:300]}")
    print(f"debug session {session_id}: {out.decode().split()[0]} MB written to its layer in "
          f"{time.time() - t0:.1f} s", flush=True)
    return session_id


def remove_images(client) -> int:
    """The snapshots and builds of this benchmark (by name), however far the run got."""
    removed = 0
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith((f"{INSTANCE}-users/", f"{BUILD_TAG}:")):
                try:
                    client.images.remove(tag, force=True)
                    removed += 1
                except docker.errors.APIError as e:
                    print(f"could not remove {tag}: {e}", file=sys.stderr)
    client.images.prune(filters={"dangling": True, "label": f"labdeck.instance={INSTANCE}"})
    return removed


# ---- the run ----

def phase(pair, client, users, job_api, count, timeout, load=None, budget=180) -> dict:
    """Alternate single starts (stock, ours) and jobs until each has ``count`` results that
    count: all of them when unloaded, those that ran entirely inside the load when loaded."""
    results = {STOCK: [], OURS: [], "jobs": [], "bare": []}
    kept = {key: 0 for key in results}
    deadline = time.monotonic() + budget
    i = 0
    while min(kept.values()) < count and time.monotonic() < deadline:
        if load is not None and load.errors:
            break  # reported by the caller
        for label in (STOCK, OURS):
            if kept[label] < count:
                res = one_start(pair, label, users[i % len(users)], client, timeout)
                res["loaded"] = load.window_ok(res["t0"], res["end"]) if load else False
                results[label].append(res)
                kept[label] += "error" in res or load is None or res["loaded"]
                show(label, res, load)
        if kept["jobs"] < count:
            res = one_job(job_api)
            res["loaded"] = load.window_ok(res["t0"], res["end"]) if load else False
            results["jobs"].append(res)
            kept["jobs"] += "error" in res or load is None or res["loaded"]
            show("job (ours)", res, load)
        if kept["bare"] < count:
            res = one_bare(client.api)
            res["loaded"] = load.window_ok(res["t0"], res["end"]) if load else False
            results["bare"].append(res)
            kept["bare"] += "error" in res or load is None or res["loaded"]
            show("engine alone", res, load)
        i += 1
    return results


def show(label, res, load):
    where = "" if load is None else ("  [under load]" if res.get("loaded") else "  [load not throughout: not counted]")
    if "error" in res:
        print(f"  {label:20s} FAILED: {res['error']}", flush=True)
    else:
        inside = f" (server listening at {res['inside']:5.2f} s)" if "inside" in res else ""
        print(f"  {label:20s} {res['ready']:6.2f} s{inside}{where}", flush=True)


def counted(results, key, loaded):
    return [r for r in results[key] if "error" not in r and (r["loaded"] or not loaded)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=8, help="starts per spawner and phase (default 8; fewer give unsteady medians)")
    parser.add_argument("--big-gb", type=int, default=1, help="GB written to the debug session's layer (default 1)")
    parser.add_argument("--build-mb", type=int, default=512, help="MB the image build writes (default 512)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one start may take (default 120)")
    parser.add_argument("--pool-size", type=int, default=2, help="our WarmPool.size (default 2, the product's; 0: off)")
    parser.add_argument("--port-base", type=int, default=46200,
                        help="first host port of our debug sessions (20 ports; default 46200)")
    args = parser.parse_args()
    print(engine_cpu_weight(), flush=True)
    users = [f"iso{i}" for i in range(4)]
    extra = (f"c.DebugSessions.port_pool_first = {args.port_base}\n"
             f"c.DebugSessions.port_pool_last = {args.port_base + 19}\n"
             "c.Quotas.request_defaults = {'cpu': 1, 'memory_gb': 1, 'gpus': 0}\n")  # OPTIONS[OURS]: the pool's
    pair = HubPair(INSTANCE, ours_extra=extra, quota={"cpu": 4, "memory_gb": 8, "gpus": 0}, pool_size=args.pool_size)
    client = docker.from_env()
    load = None
    try:
        pair.start()
        pair.add_users(users + ["isoload", "isojob"])
        loader, jobber = ServiceClient(pair.ours, "isoload"), ServiceClient(pair.ours, "isojob")
        print("unloaded:", flush=True)
        unloaded = phase(pair, client, users, jobber, args.starts, args.timeout)
        session_id = make_big_session(pair, loader, client, args.big_gb)
        load = Load(pair, loader, session_id, args.build_mb)
        print("loaded (a snapshot of the 1 GB layer and an image build under way):", flush=True)
        load.start()
        try:
            loaded = phase(pair, client, users, jobber, args.starts, args.timeout, load=load)
        finally:
            load.stop()
        print(f"load: {load.describe()}", flush=True)
        for e in load.errors:
            print(f"load FAILED: {e}", flush=True)
    finally:
        pair.stop()
        if load is not None:
            shutil.rmtree(load.build_dir, ignore_errors=True)
        for container in client.containers.list(all=True, filters={"label": f"labdeck.bench={INSTANCE}"}):
            container.remove(force=True)  # an engine-alone container the run was stopped in
        removed = remove_images(client)
        print(f"cleaned up: containers of {INSTANCE}, {removed} image tag(s) it made", flush=True)

    print()
    def med(rs, key):
        values = [r[key] for r in rs if r.get(key) == r.get(key)]
        return summary(values)[0] if values else float("nan")

    print("medians, seconds after the POST (jobs: submitted -> container running; engine alone: "
          "create + start); unloaded / loaded")
    print(f"{'':22s} {'ready':>14s} {'ratio':>6s}   {'container running':>15s}  {'server listening':>15s}  "
          f"{'server CPU-s':>15s}")
    ratios = {}
    for key, title in ((STOCK, STOCK), (OURS, OURS), ("jobs", "jobs (ours)"), ("bare", "engine alone")):
        before, after = counted(unloaded, key, False), counted(loaded, key, True)
        ratios[key] = med(after, "ready") / med(before, "ready")
        line = f"{title:22s} {med(before, 'ready'):6.2f} / {med(after, 'ready'):5.2f} {ratios[key]:6.2f}"
        if key in (STOCK, OURS):
            line += "   " + "  ".join(f"{med(before, k):7.2f} / {med(after, k):5.2f}" for k in ("running", "inside", "cpu"))
        warm = f", warm {sum(r.get('warm', False) for r in before)}/{sum(r.get('warm', False) for r in after)}" \
            if key == OURS else ""
        print(f"{line}   (n={len(before)}/{len(after)}{warm})")
    failures = sum("error" in r for phase_results in (unloaded, loaded) for rs in phase_results.values() for r in rs)
    if failures or load.errors:
        print(f"\n{failures} start(s) or job(s) FAILED; see above")
    pair.finish(failed=bool(failures or load.errors))
    print(f"\nengine alone, loaded / unloaded median create + start: {ratios['bare']:.2f}")
    print(f"jobs (ours), loaded / unloaded median submit -> running: {ratios['jobs']:.2f}")
    print(f"stock DockerSpawner, loaded / unloaded median start: {ratios[STOCK]:.2f}")
    print(f"LabdeckSpawner, loaded / unloaded median start (goal <= 1.25): {ratios[OURS]:.2f}")


if __name__ == "__main__":
    main()
