"""Path policy: which host paths a user may map into a container, and where.

One policy for notebooks, debug sessions, jobs and cache tasks. A user maps only
inside the roots the admin allows (their own storage, read-only shared data sets);
anything else is refused with an OptionError that names the field and what is allowed.
What may serve as a root, and the checks of the configured roots, are services.path_roots'.
"""

import os
import posixpath
import re
import stat
from dataclasses import dataclass

from traitlets import Dict, Integer, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .errors import OptionError
from .identity import Requester
from .naming import escape_name
from .path_roots import (
    check_roots_apart, checked_protected_paths, checked_shared_roots, checked_storage_root, docker_sockets,
    is_within, normalize_path, system_dir_of,
)

MAX_PATH_LENGTH = 1024
ROW_KEYS = ("host_path", "container_path", "read_only")
EXAMPLE_TARGETS = "use a path such as /data or /home/jovyan/work/data"

_TRUE = {"true", "on", "ro", "1", "yes"}
_FALSE = {"false", "off", "rw", "0", "no"}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass(frozen=True)
class Root:
    """A place a user may map from."""

    name: str  # "storage" for own storage, else the admin's name for a shared root
    path: str  # resolved absolute host path
    read_only: bool
    label: str  # human text for the form


@dataclass(frozen=True)
class Mount:
    """One accepted mapping, ready for Docker."""

    host_path: str  # resolved real path
    container_path: str  # normalized absolute path
    read_only: bool
    root: str  # Root.name it lies in
    # Docker's bind propagation; "" keeps Docker's default (rprivate). The warm pool's slot is
    # "rslave": the user's folder is mounted onto it after the container started.
    propagation: str = ""


def _show(text) -> str:
    """User input for a message: bounded length (pages escape it)."""
    text = str(text)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_text(field: str, text: str) -> None:
    """Checks shared by host and container paths."""
    if len(text) > MAX_PATH_LENGTH:
        raise OptionError(field, f"is longer than {MAX_PATH_LENGTH} characters")
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise OptionError(field, "must not contain NUL bytes or control characters")
    if ":" in text:
        raise OptionError(field, "must not contain ':' (Docker uses it to separate mount fields)")
    if ".." in text.split("/"):
        raise OptionError(field, "must not contain '..'; give the path without it")


def _parse_flag(field: str, value) -> bool | None:
    """A read-only flag from a form or JSON; None when not given."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OptionError(field, "must be true or false (also on/off, ro/rw, 1/0)")


class PathPolicy(LoggingConfigurable):
    """Which host paths each user may map, read-only or not, and at which container paths."""

    user_storage_root = Unicode(
        help="""Directory holding each user's own storage (<root>/<escaped user name>).

        Default: <Platform.data_dir>/storage. Must not be or contain a system directory.
        """,
    ).tag(config=True)

    @default("user_storage_root")
    def _default_user_storage_root(self):
        data_dir = getattr(self.parent, "data_dir", None) or os.path.abspath(
            os.environ.get("LABDECK_DATA_DIR", "data")
        )
        return self._checked_storage_root(os.path.join(data_dir, "storage"))  # defaults skip @validate

    shared_roots = List(
        Dict(),
        help="""Shared directories users may map read-only, e.g.
        ``[{"name": "imagenet", "path": "/srv/datasets/imagenet", "description": "ImageNet 2012"}]``.

        Optional ``"groups": ["vision"]`` limits a root to members of those hub groups.
        """,
    ).tag(config=True)

    storage_uid = Integer(1000, help="Owner (uid) of created storage directories; the container user.").tag(config=True)
    storage_gid = Integer(100, help="Group (gid) of created storage directories.").tag(config=True)
    max_mounts = Integer(16, help="Most path mappings one workload may have.").tag(config=True)

    protected_container_paths = List(
        Unicode(),
        default_value=[
            "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
            "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/opt/labdeck",
        ],
        help="""Container paths no mapping may be, lie in, or hide (/opt would hide /opt/labdeck).""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        check_roots_apart(self.user_storage_root, self.shared_roots)

    # ---- config validation (the checks are services.path_roots') ----

    @validate("user_storage_root")
    def _check_user_storage_root(self, proposal):
        return self._checked_storage_root(proposal["value"])

    def _checked_storage_root(self, value: str) -> str:
        return checked_storage_root(value, getattr(self.parent, "data_dir", None))

    @validate("shared_roots")
    def _check_shared_roots(self, proposal):
        return checked_shared_roots(proposal["value"], getattr(self.parent, "data_dir", None), self.log)

    @validate("protected_container_paths")
    def _check_protected(self, proposal):
        return checked_protected_paths(proposal["value"])

    # ---- roots ----

    def _storage_path(self, username: str) -> str:
        if not username:
            raise ValueError("a user name is required for user storage")
        return os.path.realpath(os.path.join(os.path.realpath(self.user_storage_root), escape_name(username)))

    def _own(self, fd: int) -> None:
        """Make a created directory usable by the container user (fd: no symlink races)."""
        os.fchmod(fd, 0o750)
        if os.geteuid() == 0:
            os.fchown(fd, self.storage_uid, self.storage_gid)

    def user_storage(self, username: str) -> str:
        """The user's storage directory, created on first use; its resolved path."""
        path = self._storage_path(username)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            return path
        fd = os.open(path, _DIR_FLAGS)
        try:
            self._own(fd)
        finally:
            os.close(fd)
        return path

    def roots_for(self, requester: Requester) -> list[Root]:
        """Where this user may map from: own storage first, then the shared roots they may read."""
        roots = [Root("storage", self._storage_path(requester.name), False, "Your storage")]
        for entry in self.shared_roots:
            if entry["groups"] and not requester.groups & set(entry["groups"]):
                continue
            label = f"Shared data set: {entry['name']}"
            if entry["description"]:
                label += f" ({entry['description']})"
            roots.append(Root(entry["name"], os.path.realpath(entry["path"]), True, label))
        caches = getattr(self.parent, "caches", None)
        if caches is not None:  # ready caches this user may read (services.caches), read-only
            roots.extend(caches.readable_roots(requester))
        return roots

    def readable_path(self, requester: Requester, text, field: str = "source") -> tuple[str, Root]:
        """An existing file or directory this user may read from their storage or a shared
        root (not a cache), resolved; refused like a mapping's host path otherwise."""
        if not isinstance(text, str) or not text.strip():
            raise OptionError(field, "give a path: ~/sub/dir for your storage, or a path in a shared root")
        roots = [root for root in self.roots_for(requester) if not root.name.startswith("cache:")]
        real, _read_only, name = self._check_host_path(field, roots, text.strip(), None)
        if not os.path.exists(real):
            raise OptionError(field, f"{_show(text.strip())} does not exist")
        return real, next(root for root in roots if root.name == name)

    # ---- mappings ----

    def check_mappings(self, requester: Requester, rows) -> list[Mount]:
        """Validate user rows into Mounts (row order), or raise OptionError.

        Every row is checked before anything is created; then missing
        sub-directories of the user's own storage are made.
        """
        if rows is None:
            return []
        if not isinstance(rows, (list, tuple)):
            raise OptionError("mounts", "must be a list of rows with host_path, container_path and read_only")
        parsed = []
        for i, row in enumerate(rows):
            fields = self._parse_row(i, row)
            if fields:
                parsed.append((i, *fields))
        if len(parsed) > self.max_mounts:
            raise OptionError("mounts", f"at most {self.max_mounts} path mappings are allowed, got {len(parsed)}")
        roots = self.roots_for(requester)
        mounts, used = [], {}
        for i, host, target, read_only in parsed:
            real, read_only, root = self._check_host_path(f"mounts[{i}].host_path", roots, host, read_only)
            field = f"mounts[{i}].container_path"
            target = self._check_container_path(field, target)
            if target in used:
                raise OptionError(field, f"{target} is already used by mounts[{used[target]}]")
            used[target] = i
            mounts.append((i, host, Mount(real, target, read_only, root)))
        for i, host, mount in mounts:
            if mount.root == "storage":
                self._make_dirs(f"mounts[{i}].host_path", requester, host, mount.host_path)
        return [mount for _, _, mount in mounts]

    def _parse_row(self, i: int, row) -> tuple[str, str, bool | None] | None:
        """(host, container, read_only) of one row; None for a blank row."""
        where = f"mounts[{i}]"
        if not isinstance(row, dict):
            raise OptionError(where, "must be an object with host_path, container_path and read_only")
        unknown = [key for key in row if key not in ROW_KEYS]
        if unknown:
            raise OptionError(where, f"unknown key {_show(repr(unknown[0]))}; allowed: {', '.join(ROW_KEYS)}")
        paths = {}
        for key in ROW_KEYS[:2]:
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                raise OptionError(f"{where}.{key}", "must be a path (text)")
            paths[key] = (value or "").strip()
        if not any(paths.values()):
            return None
        for key, value in paths.items():
            if not value:
                other = ROW_KEYS[1 - ROW_KEYS.index(key)]
                raise OptionError(f"{where}.{key}", f"is required when {other} is given")
        return paths["host_path"], paths["container_path"], _parse_flag(f"{where}.read_only", row.get("read_only"))

    def _check_container_path(self, field: str, text: str) -> str:
        _check_text(field, text)
        if not text.startswith("/"):
            raise OptionError(field, f"must be an absolute path; {EXAMPLE_TARGETS}")
        path = normalize_path(text)
        if path == "/":
            raise OptionError(field, f"/ is the container's root directory; {EXAMPLE_TARGETS}")
        for protected in self.protected_container_paths:
            if path == protected:
                problem = f"{path} is a system directory in the container"
            elif is_within(path, protected):
                problem = f"{path} lies in the container's system directory {protected}"
            elif is_within(protected, path):
                problem = f"{path} would hide the container's {protected}"
            else:
                continue
            raise OptionError(field, f"{problem}; {EXAMPLE_TARGETS}")
        return path

    def _check_host_path(self, field, roots: list[Root], text: str, read_only) -> tuple[str, bool, str]:
        """(resolved path, read-only, root name) of an allowed host path; creates nothing."""
        _check_text(field, text)
        shown = _show(text)
        if text == "~" or text.startswith("~/"):
            lexical = normalize_path(roots[0].path + text[1:])
        elif text.startswith("~"):
            raise OptionError(field, "~ means your own storage: write ~ or ~/sub/dir")
        elif not text.startswith("/"):
            raise OptionError(field, "must be an absolute path, or ~/sub/dir for your storage")
        else:
            lexical = normalize_path(text)
        try:
            real = os.path.realpath(lexical)
        except OSError as err:  # e.g. a link in /proc we may not read
            if any(is_within(lexical, root.path) for root in roots):
                raise OptionError(field, f"{shown} cannot be resolved: {err.strerror}") from None
            raise OptionError(field, self._outside_message(shown, roots, lexical, lexical)) from None
        if {lexical, real} & docker_sockets():
            raise OptionError(field, f"{shown} is the Docker socket and cannot be mapped")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISSOCK(mode):
            raise OptionError(field, f"{shown} is a socket and cannot be mapped")
        inside = [root for root in roots if is_within(real, root.path)]
        if not inside:
            raise OptionError(field, self._outside_message(shown, roots, lexical, real))
        root = max(inside, key=lambda r: len(r.path))
        if root.read_only and read_only is False:
            raise OptionError(field, f"{shown} is in the read-only root '{root.name}'; mark it read-only")
        if root.read_only and mode is None:
            raise OptionError(field, f"{shown} does not exist in the shared root '{root.name}'")
        if mode is not None and not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise OptionError(field, f"{shown} is neither a directory nor a regular file")
        return real, root.read_only or bool(read_only), root.name

    @staticmethod
    def _outside_message(shown: str, roots: list[Root], lexical: str, real: str) -> str:
        if any(is_within(lexical, root.path) for root in roots):
            return f"{shown} is a symbolic link that leads outside the allowed roots"
        sysdir = system_dir_of(lexical)
        if sysdir == lexical:
            return f"{shown} is a system directory and cannot be mapped"
        if sysdir:
            return f"{shown} lies in the system directory {sysdir} and cannot be mapped"
        if system_dir_of(real):
            return f"{shown} leads to the system directory {system_dir_of(real)} and cannot be mapped"
        allowed = ", ".join(
            "~ (your storage)" if root.name == "storage" else f"{root.path} (read-only)" for root in roots
        )
        return f"{shown} is outside the places you may map: {allowed}"

    def _make_dirs(self, field: str, requester: Requester, text: str, real: str) -> None:
        """Create what is missing of ``real`` inside own storage, walking by directory fds
        with O_NOFOLLOW so a symlink swapped in meanwhile cannot redirect mkdir or chown."""
        storage = self.user_storage(requester.name)
        if not is_within(real, storage):  # storage itself moved since the check
            raise OptionError(field, f"{_show(text)} changed while it was checked; try again")
        parts = [] if real == storage else posixpath.relpath(real, storage).split("/")
        fd = os.open(storage, _DIR_FLAGS)
        try:
            for n, part in enumerate(parts):
                try:
                    child = self._open_or_create(fd, part)
                except OSError as err:
                    problem = self._walk_problem(fd, part, last=n == len(parts) - 1, err=err)
                    if problem is None:
                        return  # mapping a single regular file
                    raise OptionError(field, f"{_show(text)} {problem}") from None
                os.close(fd)
                fd = child
        finally:
            os.close(fd)

    @staticmethod
    def _walk_problem(dir_fd: int, name: str, last: bool, err: OSError) -> str | None:
        """Why a path component could not be opened as a directory (None: a file at the end)."""
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISLNK(mode):
            return "changed while it was checked; try again"
        if mode is not None and stat.S_ISREG(mode):
            return None if last else f"cannot be created: {name} is a file"
        return f"cannot be created: {err.strerror}"

    def _open_or_create(self, dir_fd: int, name: str) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        try:
            os.mkdir(name, 0o750, dir_fd=dir_fd)
        except FileExistsError:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        self._own(child)
        return child
