"""Reading files a workload produced (a job's output folder and log), safely and in bounded pieces.

An output folder is written by the user's code: expect symlinks pointing anywhere, huge and binary
files, FIFOs, odd names, deep trees, and files that change while we read them. So:

- a path is refused (OptionError "path") if it has ``..``, is absolute, holds control characters, or
  resolves (symlinks followed) outside the folder; inside links are fine;
- every open is by the resolved path with O_NOFOLLOW and O_NONBLOCK, and the opened descriptor is
  checked (/proc/self/fd) to lie inside the folder, so a directory swapped for a symlink between
  the check and the open is caught; only regular files are read (a FIFO would block forever);
- the archive (services.output_archive) walks by directory descriptors, so it never leaves the
  folder whatever the job does meanwhile, and stores symlinks as links;
- nothing reads more than a chunk at a time; an archive streams with bounded memory.
"""

import errno
import heapq
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from .errors import OptionError
from .path_roots import is_within

KiB = 1024
PREVIEW_LIMIT = 64 * KiB
CHUNK = 64 * KiB
MAX_ENTRIES = 5000
MAX_RELATIVE = 4096

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class Entry:
    """One name in a folder, as it is (a symlink is a link, never followed)."""

    name: str
    path: str  # relative to the root, '/'-separated
    kind: str  # "dir", "file", "link" or "other" (FIFO, socket, device)
    size: int  # bytes for files, 0 otherwise
    modified: float  # POSIX time
    target: str = ""  # a link's text
    leads_to: str = ""  # a link's destination: "dir" or "file" inside the root; "" if outside or missing


class Listing(NamedTuple):
    entries: list[Entry]
    truncated: bool  # more than `limit` entries: the first ones in display order are listed
    total: int


class Preview(NamedTuple):
    text: str | None  # None when the file looks binary
    truncated: bool
    size: int
    modified: float


class LogChunk(NamedTuple):
    data: bytes  # never cuts a UTF-8 character: a partial one at the end waits for the next read
    offset: int  # where data starts in the file
    next_offset: int
    size: int  # the file's size when read
    reset: bool  # the file was shorter than the offset asked for (replaced): reading restarted at 0


def shown(text: str, limit: int = 80) -> str:
    """A path for a message: bounded, and printable even if the name is not UTF-8."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clean_relative(relative: str | None) -> str:
    """``relative`` without empty and '.' parts, or OptionError("path") if it may not be used."""
    relative = relative or ""
    if len(relative) > MAX_RELATIVE:
        raise OptionError("path", f"is longer than {MAX_RELATIVE} characters")
    if _CONTROL.search(relative):
        raise OptionError("path", "must not contain NUL bytes or control characters")
    if relative.startswith("/"):
        raise OptionError("path", f"{shown(relative)} is absolute; give a path inside the folder")
    parts = [part for part in relative.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise OptionError("path", "must not contain '..'; give a path inside the folder")
    return "/".join(parts)


def resolve(root, relative: str | None) -> Path:
    """The real path of ``relative`` inside ``root`` (symlinks resolved).

    OptionError("path") if it is refused or leads outside ``root``; FileNotFoundError if missing.
    """
    base = os.path.realpath(root)
    rel = clean_relative(relative)
    real = os.path.realpath(os.path.join(base, rel)) if rel else base
    if not is_within(real, base):
        raise OptionError("path", f"{shown(rel)} leads outside the folder")
    if not os.path.lexists(real):
        raise FileNotFoundError(errno.ENOENT, "No such file or folder", rel)
    return Path(real)


def _check_inside(fd: int, base: str | None) -> None:
    """Refuse a descriptor whose file is not inside ``base`` (what was opened, not what was asked)."""
    if base is None:
        return
    try:
        opened = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the realpath check before opening stands alone
        return
    if not is_within(opened.removesuffix(" (deleted)"), base):
        raise OptionError("path", "changed while it was read and now leads outside the folder")


def open_checked(path, flags: int, base: str | None) -> int:
    try:
        fd = os.open(path, flags)
    except OSError as err:
        link = err.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path)
        if link:  # a symlink where the resolved path had none: a loop, or swapped since
            raise OptionError("path", "is a symbolic link loop, or changed while it was read") from None
        if err.errno == errno.ENOTDIR and flags & os.O_DIRECTORY:
            raise OptionError("path", "is not a folder") from None
        raise
    try:
        _check_inside(fd, base)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(path, *, root=None) -> tuple[BinaryIO, int]:
    """A regular file opened for reading, and its size; ``root``: it must lie inside that folder."""
    fd = open_checked(path, FILE_FLAGS, os.path.realpath(root) if root is not None else None)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OptionError("path", "is not a regular file; only files and folders can be shown")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb"), st.st_size


def _kind(mode: int) -> str:
    return ("link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
            else "file" if stat.S_ISREG(mode) else "other")


def _leads_to(base: str, path: str) -> str:
    """Where a link in the root leads: "dir" or "file" when that is inside the root, else ""."""
    real = os.path.realpath(os.path.join(base, path))
    try:
        kind = _kind(os.stat(real).st_mode) if is_within(real, base) else ""
    except OSError:
        return ""
    return kind if kind in ("dir", "file") else ""


def _entry(base: str, dir_fd: int, item: os.DirEntry, rel: str) -> Entry | None:
    path = f"{rel}/{item.name}" if rel else item.name
    try:
        st = item.stat(follow_symlinks=False)
        kind = _kind(st.st_mode)
        target = os.readlink(item.name, dir_fd=dir_fd) if kind == "link" else ""
    except FileNotFoundError:  # gone since the folder was read
        return None
    leads_to = _leads_to(base, path) if kind == "link" else ""
    return Entry(item.name, path, kind, st.st_size if kind == "file" else 0, st.st_mtime, target, leads_to)


def _order(item: os.DirEntry):
    try:
        is_dir = item.is_dir(follow_symlinks=False)
    except OSError:
        is_dir = False
    return (not is_dir, item.name.casefold(), item.name)


def list_dir(root, relative: str | None = "", limit: int = MAX_ENTRIES) -> Listing:
    """The folder's entries, folders first, then by name; at most ``limit`` (held in memory)."""
    rel = clean_relative(relative)
    real = resolve(root, rel)
    base = os.path.realpath(root)
    fd = open_checked(real, DIR_FLAGS, base)
    try:
        total = 0

        def counted(items):
            nonlocal total
            for item in items:
                total += 1
                yield item

        with os.scandir(fd) as items:
            first = heapq.nsmallest(limit, counted(items), key=_order)
        entries = [e for e in (_entry(base, fd, item, rel) for item in first) if e is not None]
    finally:
        os.close(fd)
    return Listing(entries, total > limit, total)


def _complete_utf8(data: bytes) -> int:
    """Length of ``data`` without a multi-byte UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # the lead byte of the last character
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
    return len(data)


def looks_binary(data: bytes, text: str) -> bool:
    """NUL bytes, or mostly undecodable: not something to show as text."""
    return b"\0" in data or text.count("\ufffd") > len(text) // 10


def read_preview(path, limit: int = PREVIEW_LIMIT, *, root=None) -> Preview:
    """The first ``limit`` bytes of a file as text (None if it looks binary); reads no more."""
    f, _ = open_file(path, root=root)
    with f:
        data = f.read(limit)
        st = os.fstat(f.fileno())
    truncated = st.st_size > len(data)
    if truncated:
        data = data[: _complete_utf8(data)]
    text = data.decode("utf-8", "replace")
    return Preview(None if looks_binary(data, text) else text, truncated, st.st_size, st.st_mtime)


def read_from(path, offset: int | None, limit: int = CHUNK) -> LogChunk:
    """At most ``limit`` bytes of a growing file from ``offset``; None: its last ``limit`` bytes,
    from the first whole line. A file shorter than ``offset`` was replaced: read from 0 again."""
    if offset is not None and offset < 0:
        raise OptionError("offset", "must be 0 or more")
    f, size = open_file(path)
    with f:
        reset = offset is not None and offset > size
        tail = offset is None
        start = max(0, size - limit) if tail else 0 if reset else offset
        f.seek(start)
        data = f.read(min(limit, size - start))
    if tail and start > 0:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data, start = data[newline + 1:], start + newline + 1
    data = data[: _complete_utf8(data)]
    return LogChunk(data, start, start + len(data), size, reset)


# ---------------------------------------------------------------- removal


def remove_tree(path, base) -> bool:
    """Remove ``path`` (a folder with everything in it, a file or a link itself), which must lie
    strictly below ``base``; False if it did not exist. Links inside are removed, never followed."""
    base_real = os.path.realpath(base)
    lexical = os.path.abspath(path)
    target = os.path.join(os.path.realpath(os.path.dirname(lexical)), os.path.basename(lexical))
    if target == base_real or not is_within(target, base_real):
        raise ValueError(f"refusing to remove {path}: it is not below {base}")
    if not os.path.lexists(target):
        return False
    if os.path.isdir(target) and not os.path.islink(target):
        shutil.rmtree(target)  # descriptor-based on Linux: a link swapped in is not followed
    else:
        os.unlink(target)
    return True
