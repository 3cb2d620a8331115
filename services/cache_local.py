"""Local source of cache tasks: a directory or a single file on this machine.

- Data moves kernel-side (``os.copy_file_range``; pread/pwrite where the kernel refuses), a
  block (``BLOCK``) a call: the engine's step of progress and of cancel checks.
- Symlinks that leave the root are refused (by the kernel at each open, with openat2
  RESOLVE_BENEATH: a folder swapped for a link after the scan gains nothing); symlinks to files
  inside it are copied as files; symlinks to folders, dangling links, FIFOs, sockets and devices
  hold no data of their own and are skipped, and so are empty folders. Names need not be UTF-8.
- The engine is services.cache_copy; remote sources live in services.cache_sources.
"""

import ctypes
import errno
import functools
import os
import stat
import sys
import threading

from .cache_source import BLOCK, IO_BLOCK, CopyError, Source, SourceFile, libc, pwrite_all, size_changed
from .path_roots import is_within

_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO swapped in must not hang
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_OUTSIDE = "is a symlink that leads outside the source folder"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_BENEATH = _OpenHow(_READ, 0, 0x08 | 0x02)  # RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS
_BENEATH_ADDRESS, _BENEATH_SIZE = ctypes.addressof(_BENEATH), ctypes.sizeof(_BENEATH)
_FS_ENCODING = sys.getfilesystemencoding()
_openat2 = libc.syscall
_openat2.restype = ctypes.c_long
_openat2.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_openat2 = functools.partial(_openat2, 437)  # the same number on every architecture


class _KernelRefused(Exception):
    """copy_file_range is not possible between these two files (another file system...)."""


def _kernel_copy(src: int, dst: int, count: int, pos: int) -> int:
    """A first copy_file_range call: _KernelRefused when the kernel cannot copy these files."""
    try:
        return os.copy_file_range(src, dst, count, pos, pos)
    except OSError as exc:
        if exc.errno in _NO_KERNEL_COPY:
            raise _KernelRefused from None
        raise


def _fd_copy(f: SourceFile, src: int, dst: int, pos: int, length: int, step, buf=None) -> None:
    """Copy a range kernel-side, or through ``buf`` when given. The range's last call asks one
    byte more, so a file that grew shows up (a short count there is the end of the file)."""
    start, end = pos, pos + length
    tail = end == f.size
    block = BLOCK if buf is None else len(buf) - 1
    while True:
        want = end - pos if end - pos < block else block
        extra = tail and pos + want == end
        if not want and not extra:
            return
        if buf is not None:
            n = os.preadv(src, [buf[:want + extra]], pos)
            pwrite_all(dst, buf[:n], pos)
        elif pos == start:
            n = _kernel_copy(src, dst, want + extra, pos)
        else:
            n = os.copy_file_range(src, dst, want + extra, pos, pos)
        if n > want or (n == 0 and want):
            raise size_changed(f, os.fstat(src).st_size)
        if n == 0:
            return
        pos += n
        step(n)
        if extra and n == want:
            return


class _LocalSource(Source):
    ranges, streams = True, False
    beneath = True  # openat2 works here (else: the real path of each file is checked)

    def __init__(self, path: str):
        self.path = path
        real = os.path.realpath(path)
        self._file = None if os.path.isdir(real) else real
        self.root = os.path.dirname(real) if self._file else real
        self._name = os.path.basename(path.rstrip("/"))
        self._kernel = True
        self._root_fd, self._lock = None, threading.Lock()

    def describe(self) -> str:
        return self.path

    def scan(self) -> list[SourceFile]:
        if self._file:
            st = os.stat(self._file)
            if not stat.S_ISREG(st.st_mode):
                raise CopyError(self._name, "is not a regular file")
            return [SourceFile(self._name, st.st_size)]
        files, folders = [], [("", self.root)]
        while folders:
            found, below = self._scan_folder(folders.pop())
            files += found
            folders += below
        files.sort(key=lambda f: f.rel)
        return files

    def _scan_folder(self, where: tuple[str, str]) -> tuple[list[SourceFile], list[tuple[str, str]]]:
        (prefix, folder), files, folders = where, [], []
        try:
            with os.scandir(folder) as entries:
                for e in entries:
                    rel = prefix + e.name
                    if e.is_dir(follow_symlinks=False):
                        folders.append((rel + "/", e.path))
                    elif e.is_file(follow_symlinks=False):
                        files.append(SourceFile(rel, e.stat(follow_symlinks=False).st_size))
                    elif e.is_symlink():
                        real = os.path.realpath(e.path)
                        if not is_within(real, self.root):
                            raise CopyError(rel, _OUTSIDE)
                        if os.path.isfile(real):
                            files.append(SourceFile(rel, os.stat(real).st_size))
        except OSError as exc:
            raise CopyError(prefix.rstrip("/") or ".", f"cannot read: {exc.strerror}") from None
        return files, folders

    def _open(self, rel: str) -> int:
        """Open a file of the source; no link may lead out of the root, checked by the kernel
        (openat2 RESOLVE_BENEATH) at each open, so a folder swapped for a link after the scan
        cannot lend the copy another folder's data."""
        if self._file:
            return os.open(self._file, _READ)
        if self.beneath:
            if self._root_fd is None:
                with self._lock:
                    if self._root_fd is None:
                        self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            fd = _openat2(self._root_fd, rel.encode(_FS_ENCODING, "surrogateescape"),
                          _BENEATH_ADDRESS, _BENEATH_SIZE)
            if fd >= 0:
                return fd
            err = ctypes.get_errno()
            if err in (errno.ENOSYS, errno.EPERM):  # an old kernel, or a seccomp filter
                _LocalSource.beneath = False
            elif err != errno.EXDEV:
                raise OSError(err, os.strerror(err))
        # EXDEV: a link that leaves the root, or an absolute one that may lead back inside
        real = os.path.realpath(f"{self.root}/{rel}")
        if not is_within(real, self.root):
            raise CopyError(rel, _OUTSIDE)
        return os.open(real, _READ | os.O_NOFOLLOW)

    def release(self):
        with self._lock:
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def copy_range(self, f, fd, offset, length, step, hasher=None):
        src = self._open(f.rel)
        try:
            if self._kernel:
                try:
                    if length == f.size < BLOCK:  # a whole small file: one call, one byte more
                        n = _kernel_copy(src, fd, length + 1, 0)
                        if n == length:
                            return step(n)
                        if n > length:
                            raise size_changed(f, os.fstat(src).st_size)
                        offset, length = n, length - n  # a short count: the loop below judges
                        step(n)
                    return _fd_copy(f, src, fd, offset, length, step)
                except _KernelRefused:
                    self._kernel = False
            _fd_copy(f, src, fd, offset, length, step, memoryview(bytearray(min(IO_BLOCK, length) + 1)))
        finally:
            os.close(src)

    def check_unchanged(self, f):
        size = os.stat(self._file or f"{self.root}/{f.rel}").st_size
        if size != f.size:
            raise size_changed(f, size)


def local_source(path: str) -> Source:
    """A directory or a single file on this machine (the caller's path policy checked it)."""
    return _LocalSource(path)
