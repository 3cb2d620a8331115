"""Start latency: stock DockerSpawner vs LabdeckSpawner, same image, same hub settings.

    .venv/bin/python benchmarks/start_latency.py [--runs N]   (default 10 starts per spawner)

Two hubs run side by side; starts alternate between them (N each, one at a time) so both see
the same machine load. Each start is timed from the REST call (POST /users/:name/server) to
the hub reporting the server ready, polled every 20 ms. "Inside" is when the server in the
container started listening (its "is running at" log line, timestamped by Docker), i.e. the
floor no spawner can beat. Prints a table; the ratio ours/stock comes last.
"""

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.hubtools import HubProcess, remove_test_containers  # noqa: E402

INSTANCE = "labdeckbench"
OURS_CONFIG = f"""
c.Platform.instance = {INSTANCE!r}
c.Quotas.default = {{"cpu": 2, "memory_gb": 4, "gpus": 0}}
c.JupyterHub.cleanup_servers = True
"""
# Both containers may use the machine's 2 cores: stock DockerSpawner sets no CPU limit at all.
OPTIONS = {"image": "labdeck/notebook:latest", "cpu": 2, "memory_gb": 2, "gpus": 0}


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
    t0 = time.time()
    r = hub.api("POST", f"/users/{user}/server", json=options)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"start failed: {r.status_code} {r.text}")
    while True:
        model = hub.server_model(user)
        if model and model.get("ready"):
            break
        time.sleep(0.02)
    ready = time.time() - t0
    inside_at = listening_time(client.containers.get(container_name))
    inside = (inside_at - t0) if inside_at else float("nan")
    hub.stop_server(user)
    return ready, inside


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
    ours = HubProcess(work / "ours", OURS_CONFIG)
    stock = HubProcess(work / "stock", "", config_file=REPO / "benchmarks" / "stock_dockerspawner_config.py")
    remove_test_containers(INSTANCE)
    results = {"stock DockerSpawner": ([], []), "LabdeckSpawner": ([], [])}
    try:
        ours.start()
        stock.start()
        from services.accounts import AccountStore

        AccountStore(ours.platform.db).create("bench", "bench@example.org", "bench-password-1")
        for hub in (ours, stock):
            hub.api("POST", "/users/bench")
        for i in range(args.runs):
            for label, hub, name, options in (
                ("stock DockerSpawner", stock, "labdeckbench-stock-bench", {}),
                ("LabdeckSpawner", ours, f"{INSTANCE}-nb-bench", OPTIONS),
            ):
                ready, inside = one_start(hub, "bench", options, client, name)
                results[label][0].append(ready)
                results[label][1].append(inside)
                print(f"run {i + 1}: {label:20s} ready after {ready:5.2f} s (server listening at {inside:5.2f} s)",
                      flush=True)
    finally:
        ours.stop()
        stock.stop()
        remove_test_containers(INSTANCE)

    print()
    print(f"{'spawner':22s} {'median':>8s} {'p90':>8s} {'inside':>8s} {'ready/inside':>13s}")
    medians = {}
    for label, (ready, inside) in results.items():
        med, p90 = summary(ready)
        inside_med = statistics.median(inside)
        medians[label] = med
        print(f"{label:22s} {med:7.2f}s {p90:7.2f}s {inside_med:7.2f}s {med / inside_med:12.2f}x")
    ratio = medians["LabdeckSpawner"] / medians["stock DockerSpawner"]
    ours_inside = medians["LabdeckSpawner"] / statistics.median(results["LabdeckSpawner"][1])
    print(f"\ngoal: ours within 1.25x of the server's own start-up: {ours_inside:.2f}x "
          f"({'met' if ours_inside <= 1.25 else 'missed'})")
    print(f"goal: ours <= 0.5 of stock: {'met' if ratio <= 0.5 else 'missed'}")
    print(f"ratio of medians, LabdeckSpawner / stock DockerSpawner: {ratio:.2f}")


if __name__ == "__main__":
    main()
