"""Concurrent starts: 10 users start their servers at the same moment, stock DockerSpawner vs
LabdeckSpawner, the same image and hub settings.

    .venv/bin/python benchmarks/concurrent_starts.py [--rounds 3] [--users 10]

Two hubs run side by side (instance ``labdeckbench2``); each round starts all users on one hub
at once (one thread per user, released together, each sending POST /hub/api/users/NAME/server),
then all on the other (the order alternates between rounds). Before each batch every container
of the previous one is gone. One poller reads the hub's user list every 100 ms and notes when
each server is ready; a 201 answer counts as ready when it arrives. Measured: per-user
start -> ready, the time until ALL are ready, failures (every start must succeed), and where
the time went from Docker's timestamps (container created, started, server listening).
Prints per-round figures and a table; the ratio ours/stock of the all-ready time comes last
(goal: <= 0.7).

Our hub keeps its warm server pool with the product's defaults: 2 servers, growing after a
burst of starts to one per person of that burst (WarmPool.grow_to, 16). So its first batch
finds 2 warm servers and starts the rest cold, and the pool then grows to --users: the
figures of each round are printed, the first one too. --pool-size sets WarmPool.size (0: no
pool), --grow-to WarmPool.grow_to. Every batch, on either hub, starts only once the pool is
full again, so no refill runs during anyone's batch; our hub's default request is the options
used here, which the pool serves.
"""

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    OURS, STOCK, HubPair, ReadyWatcher, container_name, start_server, stop_servers,
    timeline, wait_until_gone,
)
from benchmarks.cpu_accounting import CpuMeter, engine_cpu_weight  # noqa: E402
from benchmarks.start_latency import summary  # noqa: E402

INSTANCE = "labdeckbench2"


def one_batch(pair: HubPair, label: str, users: list[str], options: dict, timeout: float) -> dict:
    """Start every user's server at once on one hub; returns per-user figures and failures."""
    hub = pair.hubs[label]
    barrier = threading.Barrier(len(users))
    sent: dict[str, float] = {}

    def go(user):
        barrier.wait()
        sent[user] = start_server(hub, user, options, watcher)

    meter = CpuMeter(hub).begin()
    with ReadyWatcher(hub, users, interval=0.1) as watcher:
        with ThreadPoolExecutor(len(users)) as pool:
            list(pool.map(go, users))
        deadline = time.monotonic() + timeout
        while not watcher.done() and time.monotonic() < deadline:
            time.sleep(0.05)
    cpu = meter.end()
    failed = dict(watcher.failed)
    for user in users:
        if user not in watcher.ready_at and user not in failed:
            failed[user] = f"not ready after {timeout:.0f} s"
    first = min(sent.values())
    client = docker.from_env()
    try:
        per_user = {u: watcher.ready_at[u] - sent[u] for u in users if u in watcher.ready_at}
        steps = {u: timeline(client, container_name(label, pair.instance, u), sent[u]) for u in per_user}
    finally:
        client.close()
    all_ready = (max(watcher.ready_at[u] for u in per_user) - first) if per_user and not failed else float("nan")
    stop_servers(hub, users)
    wait_until_gone(pair.labels(label), name_prefix=container_name(label, pair.instance, ""))
    return {"per_user": per_user, "all_ready": all_ready, "failed": failed, "steps": steps, "cpu": cpu}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one batch per spawner (default 3)")
    parser.add_argument("--users", type=int, default=10, help="users started at once (default 10)")
    parser.add_argument("--cpu", type=float, default=1, help="cores each of our servers asks for (default 1)")
    parser.add_argument("--memory-gb", type=float, default=1, help="memory each of our servers asks for (default 1)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds a batch may take (default 180)")
    parser.add_argument("--pool-size", type=int, default=2, help="our WarmPool.size (default 2, the product's; 0: off)")
    parser.add_argument("--grow-to", type=int, default=None,
                        help="our WarmPool.grow_to (default: the product's, 16; not above --pool-size: no growth)")
    parser.add_argument("--start-slots-per-core", type=float, default=None,
                        help="our LabdeckSpawner.start_slots_per_core (default: the spawner's own, 1; 0: no slots)")
    args = parser.parse_args()
    print(engine_cpu_weight(), flush=True)
    users = [f"cs{i}" for i in range(args.users)]
    options = {
        STOCK: {},
        OURS: {"image": "labdeck/notebook:latest", "cpu": args.cpu, "memory_gb": args.memory_gb, "gpus": 0},
    }
    # the host declares room for every server; each user's quota holds one
    extra = "" if args.start_slots_per_core is None else f"c.LabdeckSpawner.start_slots_per_core = {args.start_slots_per_core}\n"
    extra += f"c.Quotas.request_defaults = {{'cpu': {args.cpu}, 'memory_gb': {args.memory_gb}, 'gpus': 0}}\n"
    pool_size = args.pool_size
    if args.grow_to is not None:
        extra += f"c.WarmPool.grow_to = {args.grow_to}\n"
    print(f"our warm server pool: {pool_size} (--pool-size), growing to "
          f"{'the default' if args.grow_to is None else args.grow_to} after bursts", flush=True)
    pair = HubPair(INSTANCE, cpus=max(40, args.users * args.cpu * 2), memory_gb=max(64, args.users * args.memory_gb * 2),
                   quota={"cpu": max(2, args.cpu), "memory_gb": max(4, args.memory_gb), "gpus": 0}, ours_extra=extra,
                   pool_size=pool_size)
    results = {STOCK: [], OURS: []}
    try:
        pair.start()
        pair.add_users(users)
        for r in range(args.rounds):
            order = (STOCK, OURS) if r % 2 == 0 else (OURS, STOCK)
            for label in order:
                pair.wait_for_warm_pool()
                res = one_batch(pair, label, users, options[label], args.timeout)
                results[label].append(res)
                times = sorted(res["per_user"].values())
                spread = f"{times[0]:5.2f}-{times[-1]:5.2f} s" if times else "-"
                warm = sum(s["warm"] for s in res["steps"].values())
                print(f"round {r + 1}: {label:20s} all ready after {res['all_ready']:6.2f} s; per user {spread}; "
                      f"failed {len(res['failed'])}; warm {warm}", flush=True)
                for user, why in sorted(res["failed"].items()):
                    print(f"    FAILED {user}: {why}", flush=True)
    finally:
        pair.stop()

    print()
    print(f"{'spawner':22s} {'all ready (median of rounds)':>29s} {'per user median':>16s} {'p90':>7s} "
          f"{'failed':>7s}")
    medians = {}
    for label, rounds in results.items():
        all_ready = [res["all_ready"] for res in rounds]
        per_user = [t for res in rounds for t in res["per_user"].values()]
        failed = sum(len(res["failed"]) for res in rounds)
        rounds_text = " ".join(f"{t:.1f}" for t in all_ready)
        complete = [t for t in all_ready if t == t]  # a round with a failed start has no all-ready time
        medians[label] = summary(complete)[0] if complete else float("nan")
        med, high = summary(per_user) if per_user else (float("nan"),) * 2
        print(f"{label:22s} {medians[label]:7.2f}s ({rounds_text:>18s}) {med:15.2f}s {high:6.2f}s {failed:7d}")
    print("\nwhere the time went (median over users and rounds, seconds after the user's POST):")
    print(f"{'spawner':22s} {'created':>8s} {'started':>8s} {'listening':>10s} {'ready':>8s}")
    for label, rounds in results.items():
        steps = [s for res in rounds for s in res["steps"].values()]
        ready = [t for res in rounds for t in res["per_user"].values()]
        cols = [summary([s[k] for s in steps if s[k] == s[k]] or [float("nan")])[0]
                for k in ("created", "started", "listening")]
        print(f"{label:22s} {cols[0]:7.2f}s {cols[1]:7.2f}s {cols[2]:9.2f}s {summary(ready or [float('nan')])[0]:7.2f}s")
    print("\nCPU seconds used from the first POST until all were ready (median of rounds; a warm server's\n"
          "'per server' includes its imports, done before the POST):")
    print(f"{'spawner':22s} {'per server':>11s} {'servers':>8s} {'hub':>6s} {'proxy':>6s} {'service':>8s} "
          f"{'docker':>7s} {'machine busy':>13s} {'of capacity':>12s}")
    for label, rounds in results.items():
        per_server = [s["cpu"] for res in rounds for s in res["steps"].values()]
        servers = [sum(s["cpu"] for s in res["steps"].values()) for res in rounds]
        cpu = {k: summary([res["cpu"][k] for res in rounds])[0]
               for k in ("hub", "proxy", "service", "docker", "machine", "capacity")}
        print(f"{label:22s} {summary(per_server or [float('nan')])[0]:10.2f}s {summary(servers)[0]:7.1f}s "
              f"{cpu['hub']:5.1f}s {cpu['proxy']:5.1f}s {cpu['service']:7.1f}s {cpu['docker']:6.1f}s "
              f"{cpu['machine']:12.1f}s {cpu['capacity']:11.1f}s")
    failures = sum(len(res["failed"]) for rounds in results.values() for res in rounds)
    if failures:
        print(f"\n{failures} start(s) FAILED; see above")
    pair.finish(failed=bool(failures))
    ratio = medians[OURS] / medians[STOCK]
    print(f"\nratio of all-ready medians, LabdeckSpawner / stock DockerSpawner: {ratio:.2f}")


if __name__ == "__main__":
    main()
