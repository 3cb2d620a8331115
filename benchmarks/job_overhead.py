"""Job overhead: submit -> container running vs a bare `docker run -d`, and the queue's delay
in starting a waiting GPU job once the GPU frees up.

    .venv/bin/python benchmarks/job_overhead.py [--jobs 50] [--gpu-rounds 3]

One hub (the repository's jupyterhub_config.py, platform instance ``labdeckbench4``, a declared
host of 40 CPUs, 64 GB and 1 A100 on the local engine) runs the labdeck service.

(a) With free resources, ``--jobs`` short jobs (``echo hi > /output/x``, labdeck/notebook,
0.5 CPU, 0.5 GB) are submitted one after another through the service's JSON API, alternating
with a bare ``docker run -d`` of the same image, command, user, mount and limits (and, as a
stricter reference, the same create + start through the Docker API from Python). Every figure
runs from the client's call to the container's ``start`` event in Docker's event stream (the
moment the process runs); the job's own ``started_at`` is shown beside it.

(b) With the one GPU held by a running job and a second GPU job queued behind it, the first
ends, either terminated through the API or by finishing on its own (the service notices that
in its monitor rounds, ``Monitor.interval``); measured from the first container's ``die``
event to the second one's ``start`` event, ``--gpu-rounds`` times per way.

Prints a table of medians; the ratio ours / bare `docker run` comes last (goal <= 1.5).
"""

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import ours_config  # noqa: E402
from benchmarks.start_latency import summary  # noqa: E402
from spawner.bind_mounts import unmount_all_under  # noqa: E402
from tests.hubtools import HubProcess, ServiceClient, remove_test_containers, wait_for  # noqa: E402

INSTANCE = "labdeckbench4"
BARE_PREFIX = f"{INSTANCE}bare-"  # not labelled as the instance: the service must not see them
IMAGE = "labdeck/notebook:latest"
COMMAND = "echo hi > /output/x"
CONFIG = ours_config(INSTANCE, gpus={"A100": 1}, quota={"cpu": 40, "memory_gb": 64, "gpus": 1})
JOB = {"image": IMAGE, "region": "default", "cpu": 0.5, "memory_gb": 0.5, "gpus": 0}
# what services/recipe.py gives a 0.5 CPU / 0.5 GB job, as docker run flags
BARE_LIMITS = ["--memory", "512m", "--memory-swap", "512m", "--cpu-period", "100000", "--cpu-quota", "50000",
               "--pids-limit", "4096", "--shm-size", "256m", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges:true", "--init", "--network", "bridge", "--user", "1000:100"]


class Events:
    """Docker's start/die events of this benchmark's containers: {name: {action: epoch seconds}}."""

    def __init__(self, client):
        self.seen: dict[str, dict[str, float]] = {}
        self._cond = threading.Condition()
        self._stream = client.events(decode=True, since=int(time.time()) - 1,
                                     filters={"type": "container", "event": ["start", "die"]})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            for event in self._stream:
                name = (event.get("Actor", {}).get("Attributes") or {}).get("name", "")
                if name.startswith(INSTANCE):
                    with self._cond:
                        self.seen.setdefault(name, {})[event["Action"]] = event["timeNano"] / 1e9
                        self._cond.notify_all()
        except Exception:  # the stream is closed at the end
            pass

    def wait(self, name: str, action: str, timeout: float = 120) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: action in self.seen.get(name, {}), timeout):
                raise RuntimeError(f"no '{action}' event for {name} within {timeout}s")
            return self.seen[name][action]

    def close(self):
        self._stream.close()


def api_time(text) -> float:
    """A time the service's API gave (UTC, ISO-like, with or without zone) as epoch seconds."""
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


def submit(api, command: str, **options) -> dict:
    r = api("POST", "/jobs", json={"name": "bench", **JOB, "command": command, **options})
    if r.status_code != 201:
        raise RuntimeError(f"submit failed: {r.status_code} {r.text}")
    return r.json()


def one_job(api, events) -> tuple[float, float, str]:
    t0 = time.time()
    job = submit(api, COMMAND)
    running = events.wait(f"{INSTANCE}-{job['id']}", "start") - t0
    return running, time.time() - t0, job["id"]


def one_bare_cli(i: int, output: Path, events) -> float:
    name = f"{BARE_PREFIX}cli-{i}"
    t0 = time.time()
    subprocess.run(["docker", "run", "-d", "--name", name, "--label", f"labdeck.bench={INSTANCE}", *BARE_LIMITS,
                    "--mount", f"type=bind,source={output},target=/output",
                    "--entrypoint", "/bin/sh", IMAGE, "-c", COMMAND],
                   check=True, stdout=subprocess.DEVNULL)
    running = events.wait(name, "start") - t0
    subprocess.run(["docker", "rm", "-f", name], check=True, stdout=subprocess.DEVNULL)
    return running


def one_bare_api(i: int, output: Path, events, low) -> float:
    name = f"{BARE_PREFIX}api-{i}"
    t0 = time.time()
    host_config = low.create_host_config(
        mem_limit="512m", memswap_limit="512m", cpu_period=100_000, cpu_quota=50_000, pids_limit=4096,
        shm_size="256m", cap_drop=["ALL"], security_opt=["no-new-privileges:true"], init=True,
        network_mode="bridge", mounts=[docker.types.Mount("/output", str(output), type="bind")])
    cid = low.create_container(IMAGE, name=name, entrypoint=["/bin/sh", "-c"], command=[COMMAND],
                               user="1000:100", labels={"labdeck.bench": INSTANCE}, host_config=host_config,
                               detach=True)["Id"]
    low.start(cid)
    running = events.wait(name, "start") - t0
    low.remove_container(cid, force=True)
    return running


def remove_bare(client) -> None:
    for c in client.containers.list(all=True, filters={"label": f"labdeck.bench={INSTANCE}"}):
        c.remove(force=True)


def job_overhead(api, events, low, n: int, work: Path) -> dict:
    output = work / "bare-output"
    output.mkdir()
    os.chmod(output, 0o777)  # the bare containers run as 1000:100 like the jobs
    results = {"labdeck job": [], "labdeck job (API reply)": [], "labdeck job (started_at)": [],
               "bare docker run -d": [], "bare create+start (API)": []}
    submitted = {}
    for i in range(n):
        # alternate who goes first, so neither always runs right after the other's clean-up
        order = ["job", "cli", "api"] if i % 2 == 0 else ["api", "cli", "job"]
        for kind in order:
            if kind == "job":
                t0 = time.time()
                running, reply, job_id = one_job(api, events)
                submitted[job_id] = t0
                results["labdeck job"].append(running)
                results["labdeck job (API reply)"].append(reply)
            elif kind == "cli":
                results["bare docker run -d"].append(one_bare_cli(i, output, events))
            else:
                results["bare create+start (API)"].append(one_bare_api(i, output, events, low))
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{n} rounds", flush=True)
    for job in api("GET", "/jobs").json()["jobs"]:
        if job["id"] in submitted and job["started_at"]:
            results["labdeck job (started_at)"].append(api_time(job["started_at"]) - submitted[job["id"]])
    return results


def wait_ended(api, job_id: str, timeout: float = 120) -> dict:
    return wait_for(lambda: (j := api("GET", f"/jobs/{job_id}").json())["state"] == "ended" and j,
                    timeout, f"job {job_id} to end", interval=0.25)


def gpu_handover(holder_api, waiter_api, events, rounds: int) -> dict:
    gpu = {"gpus": 1, "gpu_model": "A100"}
    results = {"terminated via API": [], "finished on its own": []}
    for i in range(rounds):
        for way in results:
            command = "sleep 600" if way == "terminated via API" else "sleep 3"
            holder = submit(holder_api, command, **gpu)
            events.wait(f"{INSTANCE}-{holder['id']}", "start")
            waiter = submit(waiter_api, "true", **gpu)
            if waiter["state"] != "queued":
                raise RuntimeError(f"the second GPU job did not queue: {waiter['state']}")
            if way == "terminated via API":
                r = holder_api("POST", f"/jobs/{holder['id']}/terminate")
                if r.status_code != 200:
                    raise RuntimeError(f"terminate failed: {r.status_code} {r.text}")
            died = events.wait(f"{INSTANCE}-{holder['id']}", "die")
            started = events.wait(f"{INSTANCE}-{waiter['id']}", "start")
            results[way].append(started - died)
            print(f"  round {i + 1}: {way:20s} die -> next start {started - died:5.2f} s", flush=True)
            wait_ended(holder_api, holder["id"])
            wait_ended(waiter_api, waiter["id"])  # the GPU is free again for the next round
    return results


def make_users(hub, count: int) -> list[str]:
    from services.accounts import AccountStore

    store = AccountStore(hub.platform.db)
    names = []
    for _ in range(count):
        name = f"bench{secrets.token_hex(3)}"
        store.create(name, f"{name}@example.org", "bench-password-1")
        hub.api("POST", f"/users/{name}").raise_for_status()
        names.append(name)
    return names


def fmt(values) -> str:
    if not values:
        return f"{'-':>8s} {'-':>8s}"
    med, p90 = summary(values)
    return f"{med:7.3f}s {p90:7.3f}s"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50, help="short jobs (and bare runs of each kind), default 50")
    parser.add_argument("--gpu-rounds", type=int, default=3, help="GPU hand-overs per way of ending, default 3")
    args = parser.parse_args()
    client = docker.from_env()
    low = docker.APIClient(version="auto")
    client.images.get(IMAGE)  # fail early: build the images first (images/build.py)
    work = Path(tempfile.mkdtemp(prefix="labdeck-bench4-"))
    hub = HubProcess(work / "hub", CONFIG)
    remove_test_containers(INSTANCE)
    remove_bare(client)
    events = Events(client)
    try:
        hub.start()
        first, second = make_users(hub, 2)
        api, other = ServiceClient(hub, first), ServiceClient(hub, second)
        submit_warm = submit(api, "true")  # first use: the service loads its image list and pools
        events.wait(f"{INSTANCE}-{submit_warm['id']}", "start")
        print(f"(a) {args.jobs} short jobs, alternating with bare runs", flush=True)
        overhead = job_overhead(api, events, low, args.jobs, work)
        print(f"(b) GPU hand-over, {args.gpu_rounds} round(s) per way", flush=True)
        handover = gpu_handover(api, other, events, args.gpu_rounds)
        interval = hub.platform.config.Monitor.get("interval", 5.0)
    finally:
        events.close()
        hub.stop()
        remove_test_containers(INSTANCE)
        unmount_all_under(str(work))  # the warm pool's shared folder
        shutil.rmtree(hub.data_dir, ignore_errors=True)  # job folders, caches; hub.log stays
        remove_bare(client)
        low.close()
        client.close()

    print()
    print(f"{'(a) submit -> container running':34s} {'median':>8s} {'p90':>8s}")
    for label, values in overhead.items():
        print(f"{label:34s} {fmt(values)}")
    print()
    print(f"{'(b) GPU freed -> next job running':34s} {'median':>8s} {'p90':>8s}   (Monitor.interval {interval:g} s)")
    for label, values in handover.items():
        print(f"{label:34s} {fmt(values)}")
    ours = statistics.median(overhead["labdeck job"])
    print(f"\nratio of medians, labdeck job / bare create+start (API): "
          f"{ours / statistics.median(overhead['bare create+start (API)']):.2f}")
    ratio = ours / statistics.median(overhead["bare docker run -d"])
    print(f"ratio of medians, labdeck job / bare docker run -d: {ratio:.2f} (goal <= 1.5: "
          f"{'met' if ratio <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
