"""Roots of the path policy: which host directories are off limits, and the checks of the roots
an admin configures (PathPolicy's user_storage_root, shared_roots, protected_container_paths).

A root must not be, lie in or hold a system directory, the Docker socket or the platform's data
directory; a configuration that breaks this is refused at start with a TraitError naming the
setting. Used by services.paths, which holds the policy itself.
"""

import os
import posixpath
import re

from traitlets import TraitError

# Host directories no mapping and no root may be or lie in ("/" only by equality).
SYSTEM_DIRS = (
    "/", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
    "/dev", "/proc", "/sys", "/run", "/var/run", "/var/lib/docker", "/root",
)
# An admin may keep the platform (and so its storage) in root's home, e.g. /root/labdeck;
# users still cannot map /root itself or anything in it outside such a root.
HOME_SYSTEM_DIRS = ("/root",)
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
SHARED_ROOT_KEYS = ("name", "path", "description", "groups")

_ROOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_within(path: str, root: str) -> bool:
    """True when normalized ``path`` is ``root`` or below it, by whole components."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def normalize_path(path: str) -> str:
    # posixpath.normpath keeps a leading "//"; collapse every run of slashes first.
    return posixpath.normpath(re.sub("/+", "/", path))


def docker_sockets() -> set[str]:
    """Paths of the Docker socket: the usual ones, $DOCKER_HOST's, and what they resolve to."""
    paths = set(DOCKER_SOCKETS)
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        paths.add(normalize_path(docker_host[len("unix://"):]))
    return paths | {os.path.realpath(p) for p in paths}


def system_dir_of(path: str) -> str | None:
    """The system directory ``path`` is or lies in, if any."""
    for sysdir in SYSTEM_DIRS:
        if path == sysdir or (sysdir != "/" and is_within(path, sysdir)):
            return sysdir
    return None


def root_problem(path: str) -> str | None:
    """Why a directory cannot serve as a root (it is, lies in or holds system files)."""
    sysdir = system_dir_of(path)
    if sysdir == path:
        return f"{path} is a system directory"
    if sysdir and sysdir not in HOME_SYSTEM_DIRS:
        return f"{path} lies in the system directory {sysdir}"
    for inner in (*SYSTEM_DIRS, *docker_sockets()):
        if is_within(inner, path):
            what = "the Docker socket" if inner.endswith(".sock") else "the system directory"
            return f"{path} contains {what} {inner}"
    return None


# ---- checks of the configuration (PathPolicy's validators call these) ----


def refuse_bad_root(where: str, path: str, data_dir: str | None) -> None:
    problem = root_problem(path) or root_problem(os.path.realpath(path))
    if not problem and data_dir and is_within(os.path.realpath(data_dir), os.path.realpath(path)):
        problem = f"{path} contains the platform's data directory {data_dir}"
    if problem:
        raise TraitError(f"{where}: {problem}; choose a directory of its own, such as /srv/labdeck")


def checked_storage_root(value: str, data_dir: str | None) -> str:
    if not value:
        raise TraitError("PathPolicy.user_storage_root must not be empty")
    path = os.path.abspath(value)
    refuse_bad_root("PathPolicy.user_storage_root", path, data_dir)
    return path


def checked_shared_roots(entries: list, data_dir: str | None, log) -> list[dict]:
    cleaned, names = [], set()
    for i, entry in enumerate(entries):
        where = f"PathPolicy.shared_roots[{i}]"
        unknown = sorted(set(entry) - set(SHARED_ROOT_KEYS))
        if unknown:
            raise TraitError(f"{where}: unknown keys {unknown}; allowed: {', '.join(SHARED_ROOT_KEYS)}")
        name, path = entry.get("name"), entry.get("path")
        if not isinstance(name, str) or not _ROOT_NAME.fullmatch(name) or name == "storage":
            raise TraitError(f"{where}: name must be letters, digits, '.', '_' or '-' (not 'storage')")
        if name in names:
            raise TraitError(f"{where}: name '{name}' is used twice")
        if not isinstance(path, str) or not path.startswith("/"):
            raise TraitError(f"{where}: path must be an absolute host path")
        groups = entry.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise TraitError(f"{where}: groups must be a list of group names")
        path = os.path.abspath(path)
        refuse_bad_root(where, path, data_dir)
        if not os.path.isdir(path):
            log.warning("Shared root %s (%s) is not a directory yet", name, path)
        names.add(name)
        cleaned.append(
            {"name": name, "path": path, "description": str(entry.get("description") or ""), "groups": groups}
        )
    return cleaned


def checked_protected_paths(paths: list[str]) -> list[str]:
    if not all(p.startswith("/") for p in paths):
        raise TraitError("PathPolicy.protected_container_paths must be absolute paths")
    return [normalize_path(p) for p in paths]


def check_roots_apart(user_storage_root: str, shared_roots: list[dict]) -> None:
    """User storage and shared data must not overlap (checked once both settings are known)."""
    storage = os.path.realpath(user_storage_root)
    for entry in shared_roots:
        shared = os.path.realpath(entry["path"])
        if is_within(storage, shared) or is_within(shared, storage):
            raise TraitError(
                f"PathPolicy.shared_roots: '{entry['name']}' ({shared}) overlaps user_storage_root"
                f" ({storage}); keep shared data and user storage apart"
            )
