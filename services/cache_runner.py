"""Running cache tasks: copies in background threads, progress and completed files saved as
they come, so a restart resumes where it stopped; cancel frees the space.

The event loop only schedules and saves: the copy itself (services.cache_copy) runs in its
own threads. At most ``CacheSettings.parallel_tasks`` tasks copy at once; the rest wait,
oldest first.
"""

import asyncio
import shutil
import threading
from pathlib import Path

from sqlalchemy import select, update

from .caches import load_rel, store_rel
from .models import Cache, CacheFile, CacheState, utcnow

FLUSH_SECONDS = 0.5


class CacheRunner:
    def __init__(self, platform):
        self.platform = platform
        self.running: dict[str, threading.Event] = {}  # cache id -> cancel flag
        self.copies: dict = {}  # cache id -> its CopyTask while it copies
        self.runs: set[asyncio.Task] = set()
        self.halting = False

    async def kick(self) -> None:
        """Start waiting tasks while there are free slots (also resumes after a restart)."""
        free = self.platform.cache_settings.parallel_tasks - len(self.running)
        if free <= 0 or self.halting:
            return
        for cache_id in await asyncio.to_thread(self._waiting):
            if cache_id in self.running or free <= 0 or self.halting:
                continue
            free -= 1
            self.running[cache_id] = threading.Event()
            run = self.platform.spawn_background(self._run(cache_id))
            self.runs.add(run)
            run.add_done_callback(self.runs.discard)

    async def halt(self, timeout: float = 10) -> None:
        """The service is stopping: copies stop at their next chunk with their progress saved
        and stay 'copying', so the next start resumes them without copying a finished file
        again. Without this the process would wait for every copy to finish before it exits."""
        self.halting = True
        for task in list(self.copies.values()):
            task.halt()
        if self.runs:
            await asyncio.wait(list(self.runs), timeout=timeout)

    def _waiting(self) -> list[str]:
        with self.platform.db.session() as s:
            return list(s.scalars(select(Cache.id).where(
                Cache.state.in_((CacheState.queued.value, CacheState.copying.value))).order_by(Cache.created_at)))

    async def cancel(self, cache_id: str) -> None:
        """Stop a task: a copying one at its next chunk (the copy then frees its space), a
        waiting one at once."""
        flag = self.running.get(cache_id)
        if flag is not None:
            flag.set()
        else:
            await asyncio.to_thread(self._end, cache_id, CacheState.cancelled, None, remove=True)

    async def _run(self, cache_id: str) -> None:
        try:
            await self._copy(cache_id)
        except asyncio.CancelledError:
            # only the event loop's end cancels a run: start no other copy (of this cache, whose
            # copy thread is still stopping, least of all)
            self.halting = True
            raise
        finally:
            self.running.pop(cache_id, None)
            self.copies.pop(cache_id, None)
            await self.kick()

    async def _copy(self, cache_id: str) -> None:
        from . import cache_copy, cache_source
        from .caches import make_source

        cancel = self.running[cache_id]
        cache, files, done = await asyncio.to_thread(self._load, cache_id)
        if cache is None or cache.state not in (CacheState.queued.value, CacheState.copying.value):
            return
        progress = cache_copy.Progress(bytes_done=sum(f.size for f in files if f.rel in done), files_done=len(done))
        finished: list[str] = []
        lock = threading.Lock()

        def on_file_done(rel: str) -> None:
            with lock:
                finished.append(rel)

        def take() -> list[str]:
            with lock:
                taken, finished[:] = list(finished), []
                return taken

        kind = cache.source_key.split(":", 1)[0]
        source = make_source(self.platform, kind, cache.source_key.split(":", 1)[1])
        task = cache_copy.CopyTask(
            source, [cache_source.SourceFile(f.rel, f.size, (f.algo, f.checksum) if f.checksum else None)
                     for f in files],
            Path(cache.path), done=done, workers=self.platform.cache_settings.workers,
            progress=progress, on_file_done=on_file_done, cancel=cancel,
            max_rate=self.platform.cache_settings.max_rate_mb * 2**20)
        self.copies[cache_id] = task
        if self.halting:  # the service began to stop while this one loaded
            task.halt()
        copying = asyncio.ensure_future(asyncio.to_thread(task.run))
        try:
            while not copying.done():
                await asyncio.wait([copying], timeout=FLUSH_SECONDS)
                await asyncio.to_thread(self._save, cache_id, progress, take())
        except asyncio.CancelledError:
            task.halt()
            raise
        error = copying.exception()
        await asyncio.to_thread(self._save, cache_id, progress, take())
        if cancel.is_set():
            await asyncio.to_thread(self._end, cache_id, CacheState.cancelled, None, remove=True)
        elif error is not None:
            reason = (f"file {error.rel}: {error.reason}" if isinstance(error, cache_source.CopyError)
                      else f"{type(error).__name__}: {error}")
            self.platform.log.warning("Cache %s failed: %s", cache_id, reason)
            await asyncio.to_thread(self._end, cache_id, CacheState.failed, reason, remove=True)
        elif task.halted:
            self.platform.log.info("Cache %s: copy halted at %d files; the next start resumes it",
                                   cache_id, progress.files_done)
        else:
            await asyncio.to_thread(self._finish, cache_id)

    def _load(self, cache_id: str):
        with self.platform.db.session() as s:
            cache = s.get(Cache, cache_id)
            if cache is None:
                return None, [], set()
            rows = s.execute(select(CacheFile.rel, CacheFile.size, CacheFile.checksum_algo, CacheFile.checksum,
                                    CacheFile.done).where(CacheFile.cache_id == cache_id)).all()
            if cache.state == CacheState.queued.value:
                cache.state, cache.started_at = CacheState.copying.value, utcnow()
            files = [_Planned(load_rel(rel), size, algo, checksum) for rel, size, algo, checksum, _d in rows]
            return cache, files, {load_rel(rel) for rel, _s, _a, _c, done in rows if done}

    def _save(self, cache_id: str, progress, finished: list[str]) -> None:
        bytes_done, files_done = progress.snapshot()
        finished = [store_rel(rel) for rel in finished]
        with self.platform.db.session() as s:
            if finished:
                for start in range(0, len(finished), 500):
                    s.execute(update(CacheFile).where(CacheFile.cache_id == cache_id,
                                                      CacheFile.rel.in_(finished[start:start + 500]))
                              .values(done=True).execution_options(synchronize_session=False))
            s.execute(update(Cache).where(Cache.id == cache_id).values(
                bytes_done=bytes_done, files_done=files_done, rate_bps=progress.rate())
                .execution_options(synchronize_session=False))

    def _finish(self, cache_id: str) -> None:
        with self.platform.db.session() as s:
            cache = s.get(Cache, cache_id)
            missing = s.scalar(select(CacheFile.id).where(CacheFile.cache_id == cache_id,
                                                          CacheFile.done.is_(False)).limit(1))
            if missing is not None:  # every file must have arrived complete
                cache.state, cache.error = CacheState.failed.value, "some files did not arrive; create it again"
            else:
                cache.state, cache.error = CacheState.ready.value, None
                cache.bytes_done, cache.files_done, cache.rate_bps = cache.bytes_total, cache.files_total, 0.0
            cache.finished_at = utcnow()

    def _end(self, cache_id: str, state: CacheState, error: str | None, remove: bool) -> None:
        with self.platform.db.session() as s:
            cache = s.get(Cache, cache_id)
            if cache is None:
                return
            cache.state, cache.error, cache.finished_at, cache.rate_bps = state.value, error, utcnow(), 0.0
            if remove:  # before the new state is committed: once it shows, the space is free
                shutil.rmtree(Path(cache.path), ignore_errors=True)


class _Planned:
    __slots__ = ("rel", "size", "algo", "checksum")

    def __init__(self, rel, size, algo, checksum):
        self.rel, self.size, self.algo, self.checksum = rel, size, algo, checksum

