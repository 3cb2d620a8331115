"""Copy engine of cache tasks: moves a data set into a region's cache directory.

Plain threads and files: no event loop, no database. The caller runs ``CopyTask.run()`` in a
thread (``asyncio.to_thread``), persists each path ``on_file_done`` reports, and on resume passes
those paths back as ``done`` with a ``Progress`` pre-loaded with their totals.

- Several files at once (``workers`` threads); files larger than ``large_file`` are split into
  ``chunk_size`` ranges copied concurrently into one preallocated part file. Local copies use at
  most 2 threads per CPU: they are kernel-side, so more threads only queue for the GIL.
- Local data moves kernel-side (services.cache_local); streamed data (HTTP, fsspec) is written
  block by block: memory stays a few MiB per worker.
- A file is written to ``<name>.labdeck-part`` and renamed only once complete: its size is the
  declared one (a source that grows or shrinks meanwhile fails it), and so is its digest when the
  source offers one. Part files an interrupted run left are deleted when the next one starts.
- Cancel and the first failure stop every worker at its next block (8 MiB at most). Progress is
  added by each worker every 0.1 s (one shared lock per small file would cost them their speed).
  ``max_rate`` (bytes/s) paces the whole task block by block, for storage shared with running work.
- Cached files are 0644 and folders 0755, whatever the process umask.
- The local source lives in services.cache_local, remote sources (HTTP, fsspec) in
  services.cache_sources.
"""

import ctypes
import hashlib
import os
import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from .cache_source import IO_BLOCK, Cancelled, CopyError, Source, SourceFile, libc
from .cpu_groups import in_the_background

PART = ".labdeck-part"
_WRITE = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC  # read too: the digest of a finished part
_BAD_REL = re.compile(r"(?:^|/)\.{0,2}(?:/|$)|\x00")  # empty, "." or ".." component, NUL


class Progress:
    """Bytes and files done, shared by the workers and whoever shows them (thread-safe)."""

    WINDOW = 5.0  # seconds that rate() averages over

    def __init__(self, bytes_done: int = 0, files_done: int = 0):
        self.bytes_done, self.files_done = bytes_done, files_done
        self._lock = threading.Lock()
        self._samples = deque([(time.monotonic(), bytes_done)], maxlen=80)

    def add(self, bytes: int = 0, files: int = 0) -> None:  # noqa: A002 (the interface's name)
        now = time.monotonic()
        with self._lock:
            self._sample(now)
            self.bytes_done += bytes
            self.files_done += files

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.bytes_done, self.files_done

    def rate(self) -> float:
        """Bytes per second over the last ~5 s (0 before any data, and after a stall)."""
        now = time.monotonic()
        with self._lock:
            self._sample(now)
            start = now - self.WINDOW
            t0, b0 = next((s for s in self._samples if s[0] >= start), self._samples[-1])
            done = self.bytes_done
        return (done - b0) / (now - t0) if now > t0 else 0.0

    def _sample(self, now: float) -> None:
        if now - self._samples[-1][0] >= 0.1:
            self._samples.append((now, self.bytes_done))


def _umask() -> int:
    try:  # read, not set-and-restore: os.umask() would race with other threads
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o077


def _preallocate(fd: int, size: int) -> None:
    # fallocate(2) itself: glibc's posix_fallocate writes zeros where a file system lacks it
    if libc.fallocate(fd, 0, ctypes.c_int64(0), ctypes.c_int64(size)) != 0:
        os.ftruncate(fd, size)


class _Big:
    """A file copied in ranges: one part file shared by its chunks."""

    def __init__(self, f: SourceFile, part: str, chunks: int):
        self.file, self.part, self.left = f, part, chunks
        self.fd = None
        self.lock = threading.Lock()


class CopyTask:
    """Copy ``files`` of ``source`` into ``target``; ``run()`` blocks until done or cancelled."""

    def __init__(self, source: Source, files: list[SourceFile], target: Path, *,
                 done: set[str] = frozenset(), workers: int = 8, chunk_size: int = 32 * 2**20,
                 large_file: int = 64 * 2**20, progress: Progress | None = None,
                 on_file_done: Callable[[str], None] = lambda rel: None,
                 cancel: threading.Event | None = None, max_rate: float = 0):
        for f in files:
            if _BAD_REL.search(f.rel) or f.rel.startswith("/"):
                raise CopyError(f.rel, "is not a path inside the source")
        self.source, self.files, self.done = source, files, done
        self.target = os.fspath(target)
        self.workers, self.chunk_size = max(1, workers), max(1, chunk_size)
        self.large_file = large_file
        self.progress = progress if progress is not None else Progress()
        self.on_file_done = on_file_done
        self.cancel = cancel if cancel is not None else threading.Event()
        self._stop = threading.Event()  # set by the first failure, or by halt()
        self.halted = False
        self._error = None
        self._lock = threading.Lock()
        self._fix_mode = bool(_umask() & 0o755)
        self._made = {""}  # folders of the target known to exist
        self.max_rate = max_rate  # bytes/s for the whole task; 0: as fast as it goes
        self._paced, self._pace_start, self._pace_lock = 0, time.monotonic(), threading.Lock()

    def halt(self) -> None:
        """Stop at the next chunk, keeping every finished file: the service is stopping and a
        later task resumes with what is done. ``run()`` then returns with ``halted`` set."""
        self.halted = True
        self._stop.set()

    def run(self) -> None:
        if self.cancel.is_set():
            return
        self._prepare()
        # queues of references, not of new objects: memory grows by ~16 bytes a file
        files, chunks, bigs = deque(), deque(), []
        ranges = self.source.ranges
        for f in self.files:
            if f.rel in self.done:
                continue
            if ranges and f.size > self.large_file:  # ranges go first: they take longest
                offsets = range(0, f.size, self.chunk_size)
                bigs.append(_Big(f, f"{self.target}/{f.rel}{PART}", len(offsets)))
                chunks.extend((bigs[-1], offset) for offset in offsets)
            else:
                files.append(f)
        count = min(self.workers, len(files) + len(chunks))
        if not self.source.streams:  # kernel-side copies: past 2 threads a CPU they only queue for the GIL
            count = min(count, 2 * len(os.sched_getaffinity(0)))
        threads = [threading.Thread(target=self._work, args=(files, chunks), daemon=True,
                                    name=f"cache-copy-{i}") for i in range(count)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for big in bigs:  # unfinished ones: cancelled or failed
                if big.fd is not None:
                    os.close(big.fd)
                    _unlink(big.part)
            self.source.release()
        if self._error is not None:
            raise self._error

    def _prepare(self) -> None:
        """Create the target (0755) and delete part files an interrupted run left."""
        try:
            os.makedirs(self.target, 0o755, exist_ok=True)
        except OSError as exc:
            raise CopyError(".", f"cannot create the cache folder: {exc.strerror}") from None
        if self._fix_mode:
            os.chmod(self.target, 0o755)
        stack = [self.target]
        while stack:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    if e.name.endswith(PART) and e.is_file(follow_symlinks=False):
                        os.unlink(e.path)
                    elif e.is_dir(follow_symlinks=False):
                        stack.append(e.path)

    def _folder(self, rel: str) -> None:
        """Make the folder of ``rel`` just before its first file: ext4 then keeps a folder's
        inodes together, and 20,000 small files are created ~30 % faster than with all folders
        made first. Safe in parallel: a folder is marked made only once it exists."""
        head = rel.rpartition("/")[0]
        if head in self._made:
            return
        self._folder(head)
        try:
            os.mkdir(f"{self.target}/{head}", 0o755)
        except FileExistsError:
            pass
        else:
            if self._fix_mode:
                os.chmod(f"{self.target}/{head}", 0o755)
        self._made.add(head)

    def _work(self, files: deque, chunks: deque) -> None:
        in_the_background()  # the service shares the hub's heavy CPU group (services/cpu_groups.py)
        tally = _Tally(self)
        try:
            while not (self._stop.is_set() or self.cancel.is_set()):
                try:
                    big, offset = chunks.popleft()
                    f = big.file
                except IndexError:
                    big = None
                    try:
                        f = files.popleft()
                    except IndexError:
                        return
                try:
                    if big is None:
                        self._copy_file(f, tally)
                    else:
                        self._copy_chunk(big, offset, tally)
                except OSError as exc:
                    raise CopyError(f.rel, exc.strerror or str(exc)) from None
        except Cancelled:
            pass
        except BaseException as exc:
            with self._lock:
                if self._error is None:
                    self._error = exc
            self._stop.set()
        finally:
            tally.flush()

    def _copy_file(self, f: SourceFile, tally: "_Tally") -> None:
        # the path of thousands of small files: no call or syscall it can do without
        dst = f"{self.target}/{f.rel}"
        if f.rel.rpartition("/")[0] not in self._made:
            self._folder(f.rel)
        fd = os.open(dst + PART, _WRITE, 0o644)
        try:
            hasher = _hasher(f) if f.checksum and self.source.streams else None
            self.source.copy_range(f, fd, 0, f.size, tally.step, hasher)
            if f.checksum or self._fix_mode:
                self._finish(f, fd, hasher)
        except BaseException:
            os.close(fd)
            _unlink(dst + PART)
            raise
        os.close(fd)
        os.rename(dst + PART, dst)
        tally.file_done(f.rel)

    def _copy_chunk(self, big: _Big, offset: int, tally: "_Tally") -> None:
        f = big.file
        with big.lock:
            if big.fd is None:
                self._folder(f.rel)
                big.fd = os.open(big.part, _WRITE, 0o644)
                _preallocate(big.fd, f.size)
        self.source.copy_range(f, big.fd, offset, min(self.chunk_size, f.size - offset), tally.step)
        with big.lock:
            big.left -= 1
            if big.left:
                return
        self.source.check_unchanged(f)
        self._finish(f, big.fd, None)
        fd, big.fd = big.fd, None
        os.close(fd)
        os.rename(big.part, big.part[: -len(PART)])
        tally.file_done(f.rel)

    def _finish(self, f: SourceFile, fd: int, hasher) -> None:
        """Mode, then the digest (hashing the written file when the data went kernel-side)."""
        if self._fix_mode:
            os.fchmod(fd, 0o644)
        if not f.checksum:
            return
        if hasher is None:
            hasher = _hasher(f)
            buf = memoryview(bytearray(IO_BLOCK))
            pos = 0
            while n := os.preadv(fd, [buf], pos):
                hasher.update(buf[:n])
                pos += n
                if self.cancel.is_set() or self._stop.is_set():
                    raise Cancelled
        if hasher.hexdigest() != f.checksum[1].lower():
            raise CopyError(f.rel, f"{f.checksum[0]} mismatch")


def _pace(task: "CopyTask", n: int) -> None:
    """Hold a worker back until its bytes are due at the task's ``max_rate``; a cancel or a
    failure still stops it within a quarter second."""
    with task._pace_lock:
        task._paced += n
        due = task._pace_start + task._paced / task.max_rate
    while (ahead := due - time.monotonic()) > 0:
        if task.cancel.wait(min(ahead, 0.25)) or task._stop.is_set():
            raise Cancelled


class _Tally:
    """One worker's bytes and files not yet in Progress: added every 0.1 s, not on each file
    (one shared lock per file costs thousands of small files their speed)."""

    def __init__(self, task: CopyTask):
        self.task = task
        self.progress, self.on_file_done = task.progress, task.on_file_done
        self.cancel, self.stop = task.cancel, task._stop
        self.bytes = self.files = 0
        self.due = time.monotonic() + 0.1

    def step(self, n: int) -> None:
        self.bytes += n
        if self.cancel.is_set() or self.stop.is_set():
            raise Cancelled
        if self.task.max_rate:
            _pace(self.task, n)
        if time.monotonic() >= self.due:
            self.flush()

    def file_done(self, rel: str) -> None:
        self.files += 1
        self.on_file_done(rel)
        if time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        self.progress.add(bytes=self.bytes, files=self.files)
        self.bytes = self.files = 0
        self.due = time.monotonic() + 0.1


def _hasher(f: SourceFile):
    algorithm = f.checksum[0].lower().replace("-", "")
    try:
        return hashlib.new(algorithm, usedforsecurity=False)
    except ValueError:
        raise CopyError(f.rel, f"unknown checksum algorithm {f.checksum[0]!r}") from None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
