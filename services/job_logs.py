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


class _Copy:
    """One copy of a log in progress. :meth:`halt` ends it at once, even in the middle of a
    blocking read of a quiet job's stream: a stopping service must not wait for its jobs."""

    def __init__(self):
        self.stop = threading.Event()
        self.stream = None

    def run(self, client, container_id: str, path: Path, follow: bool) -> None:
        with open(path, "wb") as out:  # Docker's stream starts at the beginning of the log
            self.stream = client.logs(container_id, stdout=True, stderr=True, stream=True, follow=follow)
            try:
                if self.stop.is_set():  # halted while the stream opened: a quiet job may send nothing
                    return
                for chunk in self.stream:
                    if self.stop.is_set():
                        return
                    out.write(chunk)
                    out.flush()
            finally:
                self.stream.close()

    def halt(self) -> None:
        self.stop.set()
        if self.stream is not None:
            try:
                self.stream.close()  # the blocked read returns or raises
            except Exception:  # already closed
                pass


class JobLogs:
    def __init__(self, platform, threads: int = 64):
        self.platform = platform
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job-log")
        self._followers: dict[str, tuple] = {}  # workload id -> (future, _Copy)

    def follow(self, workload_id: str, host_name: str, container_id: str, path: Path, on_end=None) -> None:
        """Copy the running container's log to ``path`` until it exits (once per job). When the
        stream ends, ``on_end(platform, workload_id, host_name, container_id)`` runs on the loop."""
        current = self._followers.get(workload_id)
        if current is not None and not current[0].done():
            return
        copy = _Copy()
        future = self.pool.submit(self._run, host_name, container_id, path, True, copy)
        self._followers[workload_id] = (future, copy)
        if on_end is not None:
            loop = asyncio.get_running_loop()

            def ended(_future):
                if copy.stop.is_set():  # finish() gave up on it (finalize runs already) or the service stops
                    return
                try:
                    loop.call_soon_threadsafe(self.platform.spawn_background,
                                              on_end(self.platform, workload_id, host_name, container_id))
                except RuntimeError:  # the loop closed: the service is stopping; the monitor sees it later
                    pass

            future.add_done_callback(ended)

    def _run(self, host_name, container_id, path, follow, copy: _Copy) -> bool:
        try:
            copy.run(self.platform.docker.client(host_name), container_id, path, follow)
            return not copy.stop.is_set()
        except (DockerException, OSError) as e:
            if not copy.stop.is_set():
                self.platform.log.warning("Log of %s: %s", container_id[:12], e)
            return False
        except Exception:
            if copy.stop.is_set():  # a halted stream may fail in any way as it is closed
                return False
            raise

    def halt(self) -> None:
        """The service stops: end every follower now. The jobs keep running; the next start
        follows them again and rewrites their logs from Docker's complete log."""
        for _future, copy in self._followers.values():
            copy.halt()

    async def finish(self, workload_id: str, host_name: str, container_id: str, path: Path) -> None:
        """The container has exited: make sure ``path`` holds its whole log."""
        current = self._followers.pop(workload_id, None)
        if current is not None:
            try:
                if await asyncio.wait_for(asyncio.wrap_future(current[0]), 30):
                    return
            except asyncio.TimeoutError:
                current[1].halt()
        # no follower (the service restarted after the exit) or it failed: copy the whole log now
        await asyncio.wrap_future(self.pool.submit(self._run, host_name, container_id, path, False, _Copy()))
