"""What labdeck's images are made of: the image chain under images/ and each image's input hash.

Used by images/build.py (which builds what these describe) and by the tests. An image's hash
covers RECIPE_VERSION, its directory's files, the wheel target and its parent's hash, so this
module itself is part of no image's inputs. Standard library only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
CACHE_DIR = IMAGES_DIR / ".cache"
LOG_DIR = CACHE_DIR / "logs"
REPOSITORY = "labdeck"

# Bump when the way images are made changes, so that every image is rebuilt once.
RECIPE_VERSION = "1"

BASE = {
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "pull": "debian:bookworm-slim",
    "packages": ["python3", "python3-venv", "ca-certificates", "tini", "procps"],
    "env": {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
    },
    "description": "Debian bookworm with python3, python3-venv, ca-certificates, tini and procps",
}

# Wheels are fetched for the base's Python (bookworm: CPython 3.11.2, glibc 2.36).
WHEEL_TARGET = {
    "python_version": "3.11.2",
    "platforms": [f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)]
    + ["manylinux2014_x86_64"],
}

REQUIRED_LABELS = ("labdeck.description", "labdeck.kinds", "labdeck.capabilities")

PARENT_FILE = "PARENT"  # in a user image's directory: the user image it builds on


class BuildError(Exception):
    """A step failed; the message says which, and where its log is."""


@dataclass(frozen=True)
class Image:
    name: str
    digest: str  # sha256 of the inputs
    directory: Path | None = None  # None for the base
    parent: Image | None = None  # what it is built FROM (BASE); None for the base

    @property
    def tag(self) -> str:
        return f"{REPOSITORY}/{self.name}:{self.digest[:12]}"

    @property
    def latest(self) -> str:
        return f"{REPOSITORY}/{self.name}:latest"


# ---------------------------------------------------------------- inputs and hashes


def input_hash(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:  # length-prefixed, so that no two lists of parts collide
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def json_bytes(value: dict) -> bytes:
    return json.dumps(value, sort_keys=True).encode()


def base_image() -> Image:
    return Image("base", input_hash(RECIPE_VERSION.encode(), json_bytes(BASE)))


def user_images(base: Image, images_dir: Path = IMAGES_DIR) -> list[Image]:
    """Every user image, each after the image it builds on."""
    dirs = {
        d.name: d for d in sorted(images_dir.iterdir())
        if d.is_dir() and d.name not in ("base", ".cache") and (d / "Dockerfile").is_file()
    }
    resolved: dict[str, Image] = {}  # insertion order: parents first

    def resolve(name: str, children: tuple[str, ...]) -> Image:
        if name in resolved:
            return resolved[name]
        if name in children:
            raise BuildError(f"images build on each other in a circle: {' <- '.join((name, *children))}")
        parent_name = declared_parent(dirs[name])
        if parent_name is None:
            parent = base
        elif parent_name in dirs:
            parent = resolve(parent_name, (name, *children))
        else:
            raise BuildError(f"{dirs[name] / PARENT_FILE} names {parent_name!r}, which is not a "
                             f"directory with a Dockerfile under {images_dir}")
        resolved[name] = user_image(dirs[name], parent)
        return resolved[name]

    for name in dirs:
        resolve(name, ())
    return list(resolved.values())


def declared_parent(directory: Path) -> str | None:
    """The user image named in the directory's PARENT file; None: built on the base."""
    path = directory / PARENT_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def user_image(directory: Path, parent: Image) -> Image:
    """The image of one directory, built FROM ``parent`` (the base or another user image)."""
    parts = [RECIPE_VERSION.encode(), parent.digest.encode(), json_bytes(WHEEL_TARGET)]
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        parts += [path.relative_to(directory).as_posix().encode(), path.read_bytes()]
    return Image(directory.name, input_hash(*parts), directory, parent)
