"""Keeping a job's log: stdout and stderr copied to its folder while it runs.

One follower per running job reads Docker's log stream in a thread of its own pool (long
blocking reads must not take the threads that start and stop containers) and appends to
``log.txt``; pages follow that file. After a service restart a follower starts over and
rewrites the file from Docker's complete log, so nothing is missing or doubled.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docker.errors import DockerException

CHUNK_FLUSH = 64 * 1024


def _copy(client, container_id: str, path: Path, follow: bool, stop: threading.Event) -> None:
    with open(path, "wb") as out:  # Docker's stream starts at the beginning of the log
        for chunk in client.logs(container_id, stdout=True, stderr=True, stream=True, follow=follow):
            out.write(chunk)
            out.flush()
            if stop.is_set():
                return


class JobLogs:
    def __init__(self, platform, threads: int = 64):
        self.platform = platform
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job-log")
        self._followers: dict[str, tuple] = {}  # workload id -> (future, stop event)

    def follow(self, workload_id: str, host_name: str, container_id: str, path: Path, on_end=None) -> None:
        """Copy the running container's log to ``path`` until it exits (once per job). When the
        stream ends, ``on_end(platform, workload_id, host_name, container_id)`` runs on the loop."""
        current = self._followers.get(workload_id)
        if current is not None and not current[0].done():
            return
        stop = threading.Event()
        future = self.pool.submit(self._run, host_name, container_id, path, True, stop)
        self._followers[workload_id] = (future, stop)
        if on_end is not None:
            loop = asyncio.get_running_loop()

            def ended(_future):
                if stop.is_set():  # finish() gave up on it: finalize runs already
                    return
                try:
                    loop.call_soon_threadsafe(self.platform.spawn_background,
                                              on_end(self.platform, workload_id, host_name, container_id))
                except RuntimeError:  # the loop closed: the service is stopping; the monitor sees it later
                    pass

            future.add_done_callback(ended)

    def _run(self, host_name, container_id, path, follow, stop) -> bool:
        try:
            _copy(self.platform.docker.client(host_name), container_id, path, follow, stop)
            return True
        except (DockerException, OSError) as e:
            self.platform.log.warning("Log of %s: %s", container_id[:12], e)
            return False

    async def finish(self, workload_id: str, host_name: str, container_id: str, path: Path) -> None:
        """The container has exited: make sure ``path`` holds its whole log."""
        current = self._followers.pop(workload_id, None)
        if current is not None:
            try:
                if await asyncio.wait_for(asyncio.wrap_future(current[0]), 30):
                    return
            except asyncio.TimeoutError:
                current[1].set()
        # no follower (the service restarted after the exit) or it failed: copy the whole log now
        await asyncio.wrap_future(self.pool.submit(self._run, host_name, container_id, path, False,
                                                   threading.Event()))
