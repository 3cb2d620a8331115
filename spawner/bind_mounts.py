"""Bind mounts on the hub's machine, for the warm server pool.

A warm server's container is created before anyone claims it, with an empty slot folder as
its /home/jovyan/work, mounted with ``rslave`` propagation. Claiming it bind-mounts the
user's folder onto the slot here, on the host, and the kernel carries that mount into the
running container. That needs the slot's parent mount to be shared, and root (CAP_SYS_ADMIN).

mount(2) and umount2(2) are called directly: no process is forked on a user's start.
"""

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class MountError(OSError):
    """A mount or unmount the kernel refused."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise MountError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _check(_libc.mount(None if source is None else source.encode(), target.encode(), None, flags, None),
           f"mount {source or ''} {target}".replace("  ", " "))


def bind(source: str, target: str) -> None:
    """Mount the folder ``source`` onto the folder ``target``.

    ``source`` is opened one component at a time without following links and mounted through
    its descriptor: a folder swapped for a link after the path policy checked it (by someone
    writing to their storage from a running container) cannot redirect the mount.
    """
    fd = open_without_links(source)
    try:
        _mount(f"/proc/self/fd/{fd}", target, MS_BIND)
    finally:
        os.close(fd)


def open_without_links(path: str) -> int:
    """A descriptor of the folder at the absolute ``path``; OSError if any component is a link
    or not a folder."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for name in [part for part in path.split("/") if part]:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def unbind(target: str) -> None:
    """Detach whatever is mounted on ``target`` (at once, even while files there are open)."""
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


@dataclass(frozen=True)
class MountInfo:
    mount_point: str
    shared: bool  # propagates mounts to its peers and slaves


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountInfo]:
    """The lines of /proc/<pid>/mountinfo (proc(5)): mount point is field 5, optional fields
    ("shared:N", "master:N", ...) run from field 7 up to a lone "-"."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        optional = fields[6:fields.index("-", 6)]
        mounts.append(MountInfo(_unescape(fields[4]), any(f.startswith("shared:") for f in optional)))
    return mounts


def current_mounts() -> list[MountInfo]:
    with open("/proc/self/mountinfo") as f:
        return parse_mountinfo(f.read())


def mount_holding(path: str, mounts: list[MountInfo]) -> MountInfo | None:
    """The mount ``path`` lies on: the one with the deepest mount point at or above it, the
    last-mounted where several share that point (later lines cover earlier ones)."""
    found = None
    for m in mounts:
        if path == m.mount_point or path.startswith(m.mount_point.rstrip("/") + "/"):
            if found is None or len(m.mount_point) >= len(found.mount_point):
                found = m
    return found


def is_mount_point(path: str, mounts: list[MountInfo] | None = None) -> bool:
    return any(m.mount_point == path for m in (current_mounts() if mounts is None else mounts))


def ensure_shared(path: str) -> bool:
    """Make sure mounts made under ``path`` propagate to containers' ``rslave`` binds of it.

    Nothing to do where the mount holding ``path`` is shared already (systemd makes ``/``
    shared); otherwise ``path`` is bound onto itself and made shared (``mount --bind P P;
    mount --make-rshared P``). Returns whether it mounted anything.
    """
    path = os.path.realpath(path)
    holding = mount_holding(path, current_mounts())
    if holding is not None and holding.shared:
        return False
    if holding is None or holding.mount_point != path:
        _mount(path, path, MS_BIND | MS_REC)
    _mount(None, path, MS_SHARED | MS_REC)
    return True


def unmount_all_under(path: str) -> int:
    """Detach every mount at or below ``path``, deepest first; returns how many. For a data
    folder that is being thrown away (a test's or a benchmark's), after its containers."""
    path = os.path.realpath(path)
    points = [m.mount_point for m in current_mounts()
              if m.mount_point == path or m.mount_point.startswith(path.rstrip("/") + "/")]
    for point in sorted(points, key=len, reverse=True):
        try:
            unbind(point)
        except MountError:
            pass  # already gone with its parent
    return len(points)
