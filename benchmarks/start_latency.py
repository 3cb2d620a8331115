"""Start latency: stock DockerSpawner vs LabdeckSpawner, same image, same hub settings.

    .venv/bin/python benchmarks/start_latency.py [--runs N]   (default 10 starts per spawner)

Three hubs run side by side: stock, ours with its warm server pool (the default, 2 per host)
and ours with the pool off ("cold", the figure before the pool). Starts alternate between them
(N each, one at a time) so all see the same machine load, and each waits until our pool is
full again, so that no refill runs during anyone's start. Each start is timed from the REST
call (POST /users/:name/server) to the hub reporting the server ready: its 201 answer, or
polled every 20 ms after a 202 (benchmarks/common.py's timed_start).
"Inside" is when the server in the container started listening (its "is running at" log line,
timestamped by Docker), i.e. the floor no spawner can beat. Our hubs' default request is the
options used here (2 cores, 2 GB), which the pool serves. Prints a table; the ratio
ours/stock comes last.
"""

import argparse
import re
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.common import server_container, timed_start, wait_for_full_pool  # noqa: E402
from spawner.bind_mounts import unmount_all_under  # noqa: E402
from tests.hubtools import HubProcess, remove_test_containers  # noqa: E402

INSTANCE = "labdeckbench"
COLD_INSTANCE = f"{INSTANCE}-cold"
POOL_SIZE = 2  # WarmPool.size's default
STOCK, OURS, COLD = "stock DockerSpawner", "LabdeckSpawner", "LabdeckSpawner cold"
# Both containers may use the machine's 2 cores: stock DockerSpawner sets no CPU limit at all.
OPTIONS = {"image": "labdeck/notebook:latest", "cpu": 2, "memory_gb": 2, "gpus": 0}


def ours_config(instance: str, pool_size: int) -> str:
    return f"""
c.Platform.instance = {instance!r}
c.Quotas.default = {{"cpu": 2, "memory_gb": 4, "gpus": 0}}
c.Quotas.request_defaults = {{"cpu": 2, "memory_gb": 2, "gpus": 0}}
c.WarmPool.size = {pool_size}
c.JupyterHub.cleanup_servers = True
"""


def parse_docker_time(text: str) -> float:
    text = re.sub(r"(\.\d{6})\d*", r"\1", text.rstrip("Z"))
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def listening_time(container) -> float | None:
    """When the single-user server started listening (its own log, timestamped by Docker)."""
    for line in container.logs(timestamps=True).decode(errors="replace").splitlines():
        stamp, _, rest = line.partition(" ")
        if "is running at" in rest:
            return parse_docker_time(stamp)
    return None


def one_start(hub, user, options, client, container_name):
    """(seconds until ready, seconds until the server listened, whether a warm server served it)"""
    t0, ready = timed_start(hub, user, options)
    container = server_container(client, container_name)
    if container is None:
        raise RuntimeError(f"no container {container_name} after the start")
    inside_at = listening_time(container)
    inside = (inside_at - t0) if inside_at else float("nan")
    hub.stop_server(user)
    return ready, inside, bool(container.labels.get("labdeck.pool"))


def summary(values):
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
    return statistics.median(values), p90


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="starts per spawner (default 10)")
    args = parser.parse_args()
    client = docker.from_env()
    work = Path(tempfile.mkdtemp(prefix="labdeck-bench-"))
    ours = HubProcess(work / "ours", ours_config(INSTANCE, POOL_SIZE))
    cold = HubProcess(work / "cold", ours_config(COLD_INSTANCE, 0))
    stock = HubProcess(work / "stock", "", config_file=REPO / "benchmarks" / "stock_dockerspawner_config.py")
    hubs = (ours, cold, stock)
    for instance in (INSTANCE, COLD_INSTANCE):
        remove_test_containers(instance)
    results = {STOCK: ([], []), OURS: ([], []), COLD: ([], [])}
    warm = 0
    try:
        for hub in hubs:
            hub.start()
        from services.accounts import AccountStore

        for hub in (ours, cold):
            AccountStore(hub.platform.db).create("bench", "bench@example.org", "bench-password-1")
        for hub in hubs:
            hub.api("POST", "/users/bench")
        for i in range(args.runs):
            for label, hub, name, options in (
                (STOCK, stock, "labdeckbench-stock-bench", {}),
                (OURS, ours, f"{INSTANCE}-nb-bench", OPTIONS),
                (COLD, cold, f"{COLD_INSTANCE}-nb-bench", OPTIONS),
            ):
                wait_for_full_pool(ours, INSTANCE)  # no refill runs during a start
                ready, inside, served_warm = one_start(hub, "bench", options, client, name)
                warm += served_warm
                results[label][0].append(ready)
                results[label][1].append(inside)
                print(f"run {i + 1}: {label:20s} ready after {ready:5.2f} s (server listening at {inside:5.2f} s)"
                      f"{' warm' if served_warm else ''}", flush=True)
    finally:
        for hub in hubs:
            hub.stop()
        for instance in (INSTANCE, COLD_INSTANCE):
            remove_test_containers(instance)
        unmount_all_under(str(work))

    print()
    print(f"{'spawner':22s} {'median':>8s} {'p90':>8s} {'inside':>8s} {'ready/inside':>13s}")
    medians = {}
    for label, (ready, inside) in results.items():
        med, p90 = summary(ready)
        inside_med = statistics.median(inside)
        medians[label] = med
        print(f"{label:22s} {med:7.2f}s {p90:7.2f}s {inside_med:7.2f}s {med / inside_med:12.2f}x")
    print(f"\n{warm} of {args.runs} starts of {OURS} were served by a warm server")
    print(f"cold (pool off) / stock: {medians[COLD] / medians[STOCK]:.2f}; with the pool / cold: "
          f"{medians[OURS] / medians[COLD]:.2f}")
    ratio = medians[OURS] / medians[STOCK]
    ours_inside = medians[OURS] / statistics.median(results[OURS][1])
    print(f"\ngoal: ours within 1.25x of the server's own start-up: {ours_inside:.2f}x "
          f"({'met' if ours_inside <= 1.25 else 'missed'})")
    print(f"goal: ours <= 0.5 of stock: {'met' if ratio <= 0.5 else 'missed'}")
    print(f"ratio of medians, LabdeckSpawner / stock DockerSpawner: {ratio:.2f}")


if __name__ == "__main__":
    main()
