#!/usr/bin/env python3
"""Build labdeck's container images; the one entry point used by `./labdeck`, the tests and CI.

    python images/build.py           build what is missing, re-point the :latest aliases
    python images/build.py --list    print the current tags
    python images/build.py --force   rebuild every image, ignoring caches

Every image is tagged with a hash of its inputs (`labdeck/<name>:<hash12>`, full hash in the label
`labdeck.inputs`), so an image whose inputs have not changed is never rebuilt. No registry needed:

- `labdeck/base` is Debian bookworm with python3, python3-venv, ca-certificates, tini and procps, on
  `debian:bookworm-slim` when that can be pulled, else made with debootstrap and `docker import`.
- Every other directory under images/ that holds a Dockerfile is a user image built FROM the base
  (build argument BASE). Its requirements.txt, if any, is downloaded as wheels on the host (pip
  cannot reach PyPI from inside `docker build`) into the build context's wheels/ directory. User
  images also get the moving alias `labdeck/<name>:latest`, and must declare the labels
  labdeck.description, labdeck.kinds and labdeck.capabilities in their Dockerfile.
- A user image may instead build on another user image: a file PARENT in its directory holds that
  image's directory name (say `notebook`). The parent is built first, BASE is the parent's hash tag,
  and the child's input hash includes the parent's, so a rebuilt parent rebuilds its children.

What the images are and how their hashes are made: images/image_inputs.py. Standard library
only, plus the docker CLI (and debootstrap for the fallback). Long steps log to
images/.cache/logs/; stdout gets one line per image saying what was done.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from a file path (tests)
from image_inputs import (  # noqa: E402, F401  (user_image: the tests call it through this module)
    BASE, CACHE_DIR, LOG_DIR, REQUIRED_LABELS, WHEEL_TARGET, BuildError, Image, base_image, input_hash, json_bytes,
    user_image, user_images,
)


# ---------------------------------------------------------------- docker and logged steps


def _env() -> dict:
    # The classic builder: needs no buildx plugin and works with Debian's docker.io.
    return dict(os.environ, DOCKER_BUILDKIT="0", DEBIAN_FRONTEND="noninteractive")


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], text=True, capture_output=True, env=_env(), timeout=timeout
    )


def image_id(ref: str) -> str | None:
    result = _docker("image", "inspect", "--format", "{{.Id}}", ref)
    return result.stdout.strip() if result.returncode == 0 else None


def _run_logged(cmd: list[str], log: Path, *, what: str, timeout: float, stdin=None) -> None:
    """Run a long step with its output in a log file; on failure raise with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        try:
            rc = subprocess.run(
                cmd, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, env=_env(), timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} took longer than {timeout:.0f} s (log: {log})") from None
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise BuildError(f"{what} failed (exit {rc}); end of {log}:\n{tail}")


def _labels(image: Image, description: str) -> dict:
    # The base is not offered to users, hence no kinds.
    return {
        "labdeck.inputs": image.digest,
        "labdeck.description": description,
        "labdeck.kinds": "",
        "labdeck.capabilities": "",
    }


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# ---------------------------------------------------------------- base image


def build_base(image: Image, *, no_cache: bool) -> str:
    """Make the base image; returns how it was made."""
    labels = _labels(image, BASE["description"])
    try:
        pulled = _docker("pull", "-q", BASE["pull"], timeout=300).returncode == 0
    except subprocess.TimeoutExpired:
        pulled = False
    if pulled:
        _build_base_on_pulled(image, labels, no_cache=no_cache)
        return f"built on {BASE['pull']}"
    _build_base_with_debootstrap(image, labels)
    return f"made with debootstrap ({BASE['pull']} cannot be pulled)"


def _build_base_on_pulled(image: Image, labels: dict, *, no_cache: bool) -> None:
    context = _fresh_dir(CACHE_DIR / "context" / "base")
    (context / "Dockerfile").write_text(
        f"FROM {BASE['pull']}\n"
        "RUN apt-get update -qq"
        f" && apt-get install -y -qq --no-install-recommends {' '.join(BASE['packages'])}"
        " && rm -rf /var/lib/apt/lists/*\n"
        + "".join(f"ENV {k}={v}\n" for k, v in BASE["env"].items())
        + 'CMD ["/bin/bash"]\n'
    )
    label_args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
    _run_logged(
        ["docker", "build", "--rm", *(["--no-cache"] if no_cache else []),
         "-t", image.tag, *label_args, str(context)],
        LOG_DIR / "base.log", what=f"building {image.tag}", timeout=1800,
    )


def _build_base_with_debootstrap(image: Image, labels: dict) -> None:
    if shutil.which("debootstrap") is None:
        raise BuildError(
            f"{BASE['pull']} cannot be pulled and debootstrap is missing: apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise BuildError(f"{BASE['pull']} cannot be pulled, and debootstrap needs root")
    rootfs = CACHE_DIR / "base-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    try:
        _run_logged(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE['packages'])}",
             BASE["suite"], str(rootfs), BASE["mirror"]],
            LOG_DIR / "base.log", what="debootstrap", timeout=1800,
        )
        for junk in ("var/lib/apt/lists", "var/cache/apt", "var/log"):  # files only: keep dirs
            for child in (rootfs / junk).rglob("*"):
                if child.is_file() or child.is_symlink():
                    child.unlink()
        changes = [f"ENV {k}={v}" for k, v in BASE["env"].items()]
        changes += ['CMD ["/bin/bash"]']
        changes += [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        try:
            _run_logged(
                ["docker", "import", *[a for c in changes for a in ("--change", c)], "-", image.tag],
                LOG_DIR / "base-import.log", what=f"docker import {image.tag}",
                timeout=600, stdin=tar.stdout,
            )
        finally:
            tar.stdout.close()
            tar_rc = tar.wait()
        if tar_rc != 0:
            raise BuildError(f"tar of {rootfs} failed (exit {tar_rc})")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


# ---------------------------------------------------------------- user images


def _wheelhouse(image: Image) -> Path | None:
    """Download the image's requirements as wheels on the host, once per requirements file."""
    requirements = image.directory / "requirements.txt"
    if not requirements.is_file():
        return None
    key = input_hash(requirements.read_bytes(), json_bytes(WHEEL_TARGET))[:12]
    target = CACHE_DIR / "wheels" / f"{image.name}-{key}"
    if target.is_dir():
        return target
    partial = _fresh_dir(target.with_name(target.name + ".partial"))
    platforms = [a for p in WHEEL_TARGET["platforms"] for a in ("--platform", p)]
    _run_logged(
        [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
         "--only-binary=:all:", "--python-version", WHEEL_TARGET["python_version"],
         "--implementation", "cp", *platforms, "-d", str(partial), "-r", str(requirements)],
        LOG_DIR / f"{image.name}-wheels.log", what=f"downloading wheels for {image.name}",
        timeout=1800,
    )
    for old in target.parent.glob(f"{image.name}-*"):  # superseded wheelhouses
        if old != partial:
            shutil.rmtree(old, ignore_errors=True)
    partial.rename(target)
    return target


def _context(image: Image, wheels: Path | None) -> Path:
    """The image's directory plus wheels/ (hard links: same file system, no copying)."""
    context = CACHE_DIR / "context" / image.name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(image.directory, context, ignore=shutil.ignore_patterns("__pycache__"))
    if wheels is None:
        (context / "wheels").mkdir()
    else:
        shutil.copytree(wheels, context / "wheels", copy_function=_link_or_copy)
    return context


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _dangling_labdeck_images() -> set[str]:
    listed = _docker("images", "-q", "--no-trunc", "--filter", "dangling=true",
                     "--filter", "label=labdeck.inputs")
    return set(listed.stdout.split())


def build_user_image(image: Image, *, no_cache: bool) -> None:
    context = _context(image, _wheelhouse(image))
    before = _dangling_labdeck_images()
    try:
        _run_logged(
            ["docker", "build", "--rm", *(["--no-cache"] if no_cache else []),
             "--build-arg", f"BASE={image.parent.tag}", "--label", f"labdeck.inputs={image.digest}",
             "-t", image.tag, str(context)],
            LOG_DIR / f"{image.name}.log", what=f"building {image.tag}", timeout=1800,
        )
    finally:
        shutil.rmtree(context, ignore_errors=True)
        # The classic builder leaves earlier stages (the one with the wheels) as untagged images.
        for leftover in _dangling_labdeck_images() - before:
            _docker("rmi", leftover)
    labels = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                                image.tag).stdout or "null") or {}
    missing = [name for name in REQUIRED_LABELS if name not in labels]
    if missing:
        _docker("rmi", image.tag)
        raise BuildError(f"{image.directory}/Dockerfile must declare LABEL {', '.join(missing)}")


# ---------------------------------------------------------------- driver


def ensure(image: Image, build, *, force: bool, replaced: list[str]) -> str:
    """Build one image unless its hash tag exists; returns the line to print.

    The build it replaces (only with --force) is removed, or, while images built on it are still
    there, appended to ``replaced`` for another try once they have been rebuilt.
    """
    old_id = image_id(image.tag)
    if old_id and not force:
        return f"{image.tag} up to date"
    started = time.monotonic()
    how = build(no_cache=force)
    if old_id and old_id != image_id(image.tag) and _docker("rmi", old_id).returncode != 0:
        replaced.append(old_id)  # refused (and kept) while a container or a child image uses it
    return f"{image.tag} built in {time.monotonic() - started:.0f} s" + (f", {how}" if how else "")


@contextlib.contextmanager
def _build_lock():
    """One build at a time per checkout (say, `labdeck start` next to `labdeck test`)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the current tags and exit")
    parser.add_argument("--force", action="store_true", help="rebuild every image, no caches")
    args = parser.parse_args(argv)

    if shutil.which("docker") is None:
        print("build.py: the docker CLI is missing (Debian: apt-get install docker.io)", file=sys.stderr)
        return 1
    base = base_image()
    try:
        images = user_images(base)
    except BuildError as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 1
    if args.list:
        for image in [base, *images]:
            state = "present" if image_id(image.tag) else "not built"
            alias = f" ({image.latest})" if image.directory else ""
            print(f"{image.tag}{alias} {state}")
        return 0

    replaced: list[str] = []
    try:
        with _build_lock():
            print(ensure(base, lambda no_cache: build_base(base, no_cache=no_cache),
                         force=args.force, replaced=replaced), flush=True)
            for image in images:
                line = ensure(
                    image,
                    lambda no_cache, image=image: build_user_image(image, no_cache=no_cache),
                    force=args.force, replaced=replaced,
                )
                tagged = _docker("tag", image.tag, image.latest)
                if tagged.returncode != 0:
                    raise BuildError(f"docker tag {image.latest} failed: {tagged.stderr.strip()}")
                print(line, flush=True)
            for old_id in reversed(replaced):  # children first: their parents are free now
                _docker("rmi", old_id)
    except (BuildError, subprocess.TimeoutExpired) as error:
        print(f"build.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
