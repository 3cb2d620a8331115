"""Cache copy throughput: the cache engine (services/cache_copy.py) vs `cp -r`, same data, same run.

    .venv/bin/python benchmarks/cache_copy.py [--small 20000] [--large 3 --large-mb 400] [--rounds 5]

Two data sets are generated in a temporary folder (on the file system of the copies): a few large
files of random-ish data, and many small files of 1-16 KiB in nested folders. Each round copies
each data set with both tools, alternating which goes first; the page cache is dropped before
every copy when this runs as root (else the copies read warm data, and the table says so). The
engine's time includes scanning the source, and a reporter thread reads its progress every 0.2 s,
as the service does. Prints a table of medians, then the ratios cache/cp (throughput) last.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from services.cache_copy import CopyTask, Progress  # noqa: E402
from services.cache_local import local_source  # noqa: E402

MiB = 2**20


def make_large(root: Path, count: int, size_mb: int) -> None:
    rng = random.Random(1)
    block = bytearray(rng.randbytes(4 * MiB))
    root.mkdir()
    for i in range(count):
        with open(root / f"shard-{i}.bin", "wb") as fh:
            for n in range(size_mb // 4):
                block[:16] = f"{i:07d}/{n:08d}".encode()  # no two blocks alike
                fh.write(block)


def make_small(root: Path, count: int) -> None:
    rng = random.Random(2)
    pool = rng.randbytes(64 * 1024)
    for i in range(count):
        folder = root / f"part-{i % 40:02d}" / f"group-{i // 40 % 25:02d}"
        if i < 1000:
            folder.mkdir(parents=True, exist_ok=True)
        size, start = rng.randint(1024, 16 * 1024), rng.randrange(48 * 1024)
        (folder / f"sample-{i:06d}.bin").write_bytes(pool[start:start + size])


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def with_cp(src: Path, dst: Path) -> None:
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)


def with_cache(src: Path, dst: Path, workers: int) -> None:
    source = local_source(str(src))
    progress, finished, seen = Progress(), threading.Event(), []

    def report():  # what the service does: read progress and rate, store them for the page
        while not finished.wait(0.2):
            seen.append((progress.snapshot(), progress.rate()))

    reporter = threading.Thread(target=report)
    reporter.start()
    try:
        files = source.scan()
        CopyTask(source, files, dst, workers=workers, progress=progress).run()
    finally:
        finished.set()
        reporter.join()
    if progress.snapshot() != (sum(f.size for f in files), len(files)):
        raise SystemExit(f"progress ended at {progress.snapshot()}")


def data_size(root: Path) -> tuple[int, int]:
    total = files = 0
    for folder, _, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(folder, name)).st_size
            files += 1
    return total, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20000, help="number of small files")
    parser.add_argument("--large", type=int, default=3, help="number of large files")
    parser.add_argument("--large-mb", type=int, default=400, help="size of each large file (MB)")
    parser.add_argument("--rounds", type=int, default=5, help="copies of each set with each tool")
    parser.add_argument("--workers", type=int, default=8, help="CopyTask workers (its default: 8)")
    parser.add_argument("--dir", help="where to put the data (default: the system's temp folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="labdeck-bench-", dir=args.dir))
    try:
        sets = {"large": work / "large", "small": work / "small"}
        t0 = time.monotonic()
        make_large(sets["large"], args.large, args.large_mb)
        make_small(sets["small"], args.small)
        print(f"generated data in {time.monotonic() - t0:.1f} s under {work}")
        sizes = {name: data_size(src) for name, src in sets.items()}
        tools = {"cp -r": with_cp, "cache": lambda s, d: with_cache(s, d, args.workers)}
        times = {(name, tool): [] for name in sets for tool in tools}
        cold = True
        for round_ in range(args.rounds):
            for name, src in sets.items():
                order = list(tools) if round_ % 2 == 0 else list(tools)[::-1]
                for tool in order:
                    dst = work / "copy"
                    cold = drop_caches() and cold
                    start = time.monotonic()
                    tools[tool](src, dst)
                    times[name, tool].append(time.monotonic() - start)
                    if data_size(dst) != sizes[name]:
                        raise SystemExit(f"{tool} copied {data_size(dst)}, expected {sizes[name]}")
                    shutil.rmtree(dst)
        caches = "dropped before each copy" if cold else "NOT dropped (needs root): warm reads"
        print(f"\n{args.rounds} rounds, page cache {caches}, {os.cpu_count()} CPUs, workers={args.workers}")
        print(f"{'data set':<10} {'tool':<6} {'median s':>9} {'MB/s':>8} {'files/s':>9}   runs (s)")
        medians = {}
        for (name, tool), runs in times.items():
            size, count = sizes[name]
            medians[name, tool] = median = statistics.median(runs)
            print(f"{name:<10} {tool:<6} {median:9.2f} {size / 1e6 / median:8.1f} {count / median:9.0f}   "
                  + " ".join(f"{r:.2f}" for r in runs))
        goals = {"large": 0.9, "small": 1.0}
        for name in sets:
            ratio = medians[name, "cp -r"] / medians[name, "cache"]
            verdict = "met" if ratio >= goals[name] else "MISSED"
            print(f"ratio cache/cp on {name} files: {ratio:.2f} (goal >= {goals[name]}: {verdict})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
