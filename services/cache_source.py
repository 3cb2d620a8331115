"""What a cache task's source is (the interface services.cache_copy drives) and the helpers the
sources share: checked streamed writes, the size check, cancel at a block boundary.

Sources: services.cache_local (local files), services.cache_sources (HTTP, fsspec).
"""

import abc
import ctypes
import os
from dataclasses import dataclass
from typing import Callable

BLOCK = 8 * 2**20  # one kernel copy call: the step of progress and of cancel checks
IO_BLOCK = 2**20  # one buffer of streamed data, the read/write fallback and hashing

libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class SourceFile:
    rel: str  # '/'-separated, relative to the source root; never empty
    size: int
    checksum: tuple[str, str] | None = None  # (algorithm, hex digest), e.g. ("sha256", "ab12...")


class CopyError(Exception):
    """One file (or the source itself) could not be copied; ``reason`` is text for the page."""

    def __init__(self, rel: str, reason: str):
        super().__init__(f"{rel}: {reason}")
        self.rel, self.reason = rel, reason


class Cancelled(Exception):
    """Raised inside a worker at a block boundary once cancel (or another's failure) is set."""


class Source(abc.ABC):
    """Where files come from. Implementations: local_source, http_source, fsspec_source."""

    ranges = False  # byte ranges of one file may be copied in parallel
    streams = True  # data passes through Python, so it is hashed while written

    @abc.abstractmethod
    def scan(self) -> list[SourceFile]:
        """Every file to copy, with its size (and checksum where the source offers one)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The source as people read it (its path or URL)."""

    @abc.abstractmethod
    def copy_range(self, f: SourceFile, fd: int, offset: int, length: int,
                   step: Callable[[int], None], hasher=None) -> None:
        """Write bytes [offset, offset+length) of ``f`` into ``fd`` at the same offsets, calling
        ``step(n)`` after each block and feeding ``hasher`` when given. A range that ends at
        ``f.size`` also checks that the file ends there."""

    def check_unchanged(self, f: SourceFile) -> None:
        """After a file copied in ranges: raise CopyError if its size changed meanwhile."""

    def release(self) -> None:
        """Called when a run ends: drop pooled connections."""


def size_changed(f: SourceFile, actual) -> CopyError:
    return CopyError(f.rel, f"size {actual} != expected {f.size}")


def pwrite_all(fd: int, data, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n


def write_blocks(f, fd, offset, length, blocks, step, hasher):
    """Write streamed ``blocks`` at ``offset``; exactly ``length`` bytes must arrive."""
    pos, end = offset, offset + length
    for data in blocks:
        if pos + len(data) > end:
            raise CopyError(f.rel, f"more than the expected {f.size} bytes arrived")
        pwrite_all(fd, data, pos)
        if hasher is not None:
            hasher.update(data)
        pos += len(data)
        step(len(data))
    if pos != end:
        if length == f.size:
            raise size_changed(f, pos)
        raise CopyError(f.rel, f"only {pos - offset} of {length} bytes arrived at offset {offset}")
