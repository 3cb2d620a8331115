"""The pool for long Docker operations (services.docker_pool.DaemonThreadPool)."""

import subprocess
import sys
import threading
import time

import pytest

from services.docker_pool import DaemonThreadPool


def test_results_and_errors_reach_the_caller():
    pool = DaemonThreadPool(2, "t")
    assert pool.submit(lambda a, b=0: a + b, 2, b=3).result(5) == 5
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)


def test_at_most_max_workers_run_at_once_and_threads_are_reused():
    pool = DaemonThreadPool(2, "t")
    release = threading.Event()
    running, peak, lock = [0], [0], threading.Lock()

    def call(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1
        return threading.current_thread().name

    futures = [pool.submit(call, i) for i in range(6)]
    deadline = time.monotonic() + 5
    while running[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(f.done() for f in futures) == 0  # two run, four wait for a thread
    release.set()
    names = {f.result(5) for f in futures}
    assert peak[0] == 2 and names == {"t_0", "t_1"}
    assert pool.submit(lambda: threading.current_thread().name).result(5) in names


def test_a_process_exits_without_waiting_for_a_call_under_way():
    # a call that never ends: a ThreadPoolExecutor's process would never exit
    code = ("import threading; from services.docker_pool import DaemonThreadPool; "
            "DaemonThreadPool(1, 'long').submit(threading.Event().wait); print('leaving')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout.strip()) == (0, "leaving")
