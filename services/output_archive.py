"""A job's output folder (or part of it) as a .tar.gz, streamed with bounded memory.

The walk goes by directory descriptors (openat with O_NOFOLLOW), so it never leaves the folder
whatever the job does meanwhile; symlinks are stored as links. Paths are checked by
services.outputs, whose safe-reading rules this follows.
"""

import errno
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .outputs import CHUNK, DIR_FLAGS, FILE_FLAGS, clean_relative, open_checked, resolve

MAX_DEPTH = 128  # folders deeper than this are left out of an archive (one descriptor per level)


class _Sink:
    """Where the tar stream writes; drained after every piece, so it holds one piece at most."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, stat.S_IMODE(st.st_mode), int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    return info


def _header(tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    # TarFile.addfile without remembering the member: its list would grow with every file
    data = info.tobuf(tar.format, tar.encoding, tar.errors)
    tar.fileobj.write(data)
    tar.offset += len(data)


def _file_pieces(tar: tarfile.TarFile, info: tarfile.TarInfo, f: BinaryIO) -> Iterator[None]:
    """Header and data of one file, a chunk at a time (after each, the caller drains)."""
    _header(tar, info)
    remaining = info.size
    while remaining:
        data = f.read(min(CHUNK, remaining))
        if not data:  # the file shrank while archived: pad, the header promised its size
            data = bytes(min(CHUNK, remaining))
        tar.fileobj.write(data)
        remaining -= len(data)
        yield
    blocks, rest = divmod(info.size, tarfile.BLOCKSIZE)
    if rest:
        tar.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE - rest))
        blocks += 1
    tar.offset += blocks * tarfile.BLOCKSIZE


def _member_pieces(tar, dir_fd: int, name: str, arcname: str, depth: int) -> Iterator[None]:
    """One name in an open folder, by descriptor and never following a link; gone: skipped."""
    child = f = None
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            info = _info(arcname, st, tarfile.SYMTYPE)
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            _header(tar, info)
        elif stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
            child = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
        elif stat.S_ISREG(st.st_mode):
            f = os.fdopen(os.open(name, FILE_FLAGS, dir_fd=dir_fd), "rb")
        # FIFOs, sockets and devices are not archived
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    except OSError as err:
        if err.errno != errno.ELOOP:  # ELOOP: swapped for a link since stat; skipped
            raise
        return
    if child is not None:
        try:
            yield from _tree_pieces(tar, child, arcname, depth + 1)
        finally:
            os.close(child)
    elif f is not None:
        with f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode):  # still: it may have been swapped since stat
                info = _info(arcname, st, tarfile.REGTYPE)
                info.size = st.st_size
                yield from _file_pieces(tar, info, f)


def _tree_pieces(tar, dir_fd: int, arcname: str, depth: int) -> Iterator[None]:
    _header(tar, _info(arcname, os.fstat(dir_fd), tarfile.DIRTYPE))
    try:
        names = sorted(os.listdir(dir_fd))  # one folder's names at a time
    except PermissionError:
        names = []
    for name in names:
        yield from _member_pieces(tar, dir_fd, name, f"{arcname}/{name}", depth)
        yield


def archive_chunks(root, relative: str | None = "", top: str | None = None) -> Iterator[bytes]:
    """A tar.gz of the folder ``relative`` in ``root``, produced piece by piece, all under the
    folder ``top`` (default: the folder's name). The path is checked now (OptionError,
    FileNotFoundError); the folder is read as the chunks are taken. Close the iterator to stop."""
    base = os.path.realpath(root)
    real = resolve(root, relative)
    top = clean_relative(top or real.name or "files").replace("/", "_") or "files"
    return _archive(real, base, top)


def _archive(real: Path, base: str, top: str) -> Iterator[bytes]:
    sink = _Sink()
    fd = open_checked(real, DIR_FLAGS, base)
    try:
        with tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT,
                          encoding="utf-8", errors="surrogateescape") as tar:
            for _ in _tree_pieces(tar, fd, top, 0):
                if chunk := sink.drain():
                    yield chunk
        if chunk := sink.drain():
            yield chunk
    finally:
        os.close(fd)
