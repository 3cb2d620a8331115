"""Save a running session as an image in its owner's private repository ("save snapshot").

``docker commit`` runs in the background, on the pool kept for long Docker operations, while
the session stays usable; the image row goes ``saving`` -> ``saved`` or ``failed`` (with the
reason). A commit the service did not see finish (it restarted) is adopted once the engine has
it. Bind mounts are never part of a commit, so mapped data stays out of the image.
"""

import asyncio
import re
from datetime import datetime, timedelta

from docker.errors import DockerException, ImageNotFound
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .errors import OptionError
from .identity import Requester
from .models import ImageState, UserImage, Workload, WorkloadState, utcnow
from .naming import escape_name

NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
IMAGE_KINDS = ("debug", "job")  # the repository's two lists; every picker offers both
KIND_TITLES = {"debug": "remote debug", "job": "training / evaluation"}
# how far the engine's clock may lag the service's when telling a new commit from an older image
CLOCK_SLACK = timedelta(seconds=60)
# labels of the running container that describe the workload, not the image
WORKLOAD_LABELS = ("labdeck.instance", "labdeck.id", "labdeck.kind", "labdeck.user", "labdeck.region",
                   "labdeck.host", "labdeck.gpus", "labdeck.gpu_model", "labdeck.cpu_milli",
                   "labdeck.memory_mb", "labdeck.ports", "labdeck.server_name")


def repository_for(platform, owner: str, name: str) -> str:
    """Where a user's images live in the engine: one namespace per (escaped) user."""
    return f"{platform.instance}-users/{escape_name(owner)}/{name}"


def check_snapshot_options(raw) -> tuple[str, str, str]:
    if not isinstance(raw, dict):
        raise OptionError("snapshot", "must be an object with name, tag and kind")
    name, tag, kind = raw.get("name"), raw.get("tag") or "latest", raw.get("kind") or "debug"
    if not isinstance(name, str) or len(name) > 64 or not NAME_RE.fullmatch(name):
        raise OptionError("name", "use 1-64 lowercase letters and digits, separated by single '.', '_' or '-'")
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        raise OptionError("tag", "use 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'")
    if kind not in IMAGE_KINDS:
        raise OptionError("kind", f"choose one of: {', '.join(IMAGE_KINDS)}")
    return name, tag, kind


def _begin(platform, requester: Requester, workload_id: str, raw) -> UserImage:
    name, tag, kind = check_snapshot_options(raw)
    with platform.db.session() as s:
        w = s.get(Workload, workload_id)
        if w.state != WorkloadState.running.value or not w.container_id:
            raise OptionError("session", f"session {workload_id} is not running; only a running session can be saved")
        image = UserImage(owner=w.user, name=name, tag=tag, kind=kind, state=ImageState.saving.value,
                          repository=repository_for(platform, w.user, name), source_workload=w.id,
                          source_name=w.name,
                          source_host=w.host, created_by=requester.name)
        s.add(image)
        try:
            s.flush()
        except IntegrityError:
            raise OptionError("name", f"you already have an image {name}:{tag}; choose another name or tag") from None
        return image


async def start_snapshot(platform, requester: Requester, workload_id: str, raw) -> UserImage:
    """Record the image as ``saving`` and commit in the background. Returns at once."""
    image = await asyncio.to_thread(_begin, platform, requester, workload_id, raw)
    platform.spawn_background(_commit(platform, image.id))
    return image


def _source_container(platform, image_id: int):
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        return image, s.get(Workload, image.source_workload).container_id


async def _commit(platform, image_id: int) -> None:
    image, container_id = await asyncio.to_thread(_source_container, platform, image_id)
    try:
        info = await platform.docker.call(image.source_host, "inspect_container", container_id)
        config = info["Config"]
        # Docker merges the container's labels into a commit and cannot drop one: the labels
        # that described the session are blanked instead (the recipe sets them on every container)
        labels = {k: ("" if k in WORKLOAD_LABELS else v) for k, v in (config.get("Labels") or {}).items()}
        labels.update({"labdeck.kinds": image.kind, "labdeck.owner": image.owner,
                       "labdeck.source": image.source_workload})
        # the committed config is the image's own, not the session's environment (secrets)
        image_info = await platform.docker.call(image.source_host, "inspect_image", info["Image"])
        conf = dict(image_info["Config"])
        conf["Labels"] = labels
        platform.log.info("Snapshot %s: committing container %s as %s", image_id, container_id[:12], image.reference)
        result = await platform.docker.call_long(
            image.source_host, "commit", container_id, repository=image.repository, tag=image.tag,
            message=f"snapshot of session {image.source_workload}", author=image.created_by, conf=conf,
            pause=False,  # the session stays usable while its layer is copied
        )
    except (DockerException, OSError, KeyError) as e:
        reason = getattr(e, "explanation", None) or str(e)
        await asyncio.to_thread(_finish, platform, image_id, ImageState.failed, error=reason)
        return
    try:
        info = await platform.docker.call(image.source_host, "inspect_image", result["Id"])
    except (DockerException, OSError) as e:  # the image is there all the same
        platform.log.warning("Snapshot %s is saved, but its size is unknown: %s", image_id, e)
        info = {"Id": result["Id"]}
    await _saved(platform, image_id, info)


async def _saved(platform, image_id: int, info: dict) -> None:
    """Record the committed image (``inspect_image``), then push it where a registry is set."""
    await asyncio.to_thread(_finish, platform, image_id, ImageState.saved, docker_id=info["Id"],
                            size=info.get("Size"))
    from .repository import push_if_configured  # the repository builds on snapshots, not the reverse

    await push_if_configured(platform, image_id)


def _finish(platform, image_id: int, state, *, error=None, docker_id=None, size=None) -> None:
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        image.state, image.error = state.value, error
        image.docker_id, image.size_bytes = docker_id, size
        image.finished_at = utcnow()


def images_of(platform, owner: str) -> list[UserImage]:
    with platform.db.session() as s:
        return list(s.scalars(select(UserImage).where(UserImage.owner == owner)
                              .order_by(UserImage.created_at.desc())))


def image_view(image: UserImage) -> dict:
    return {
        "id": image.id, "name": image.name, "tag": image.tag, "reference": image.reference,
        "kind": image.kind, "kind_title": KIND_TITLES.get(image.kind, image.kind), "state": image.state,
        "error": image.error, "owner": image.owner, "source": image.source_workload,
        "source_name": image.source_name, "size_bytes": image.size_bytes, "pushed_to": image.pushed_to,
        "created_at": image.created_at, "finished_at": image.finished_at,
    }


def interrupted_snapshots(platform) -> list[int]:
    """Snapshots a restart of the service left ``saving``."""
    with platform.db.session() as s:
        return list(s.scalars(select(UserImage.id).where(UserImage.state == ImageState.saving.value)))


async def adopt_interrupted(platform, image_id: int, interval: float = 2.0) -> None:
    """Finish a snapshot whose service stopped while it was saved. The engine completes a commit
    whose caller went away (measured: a 1 GB commit was tagged 5 s after its client was killed),
    so the image is adopted when it appears; the snapshot fails only if none has appeared
    ``long_docker_timeout`` seconds after it began."""
    image = await asyncio.to_thread(image_row, platform, image_id)
    deadline = image.created_at + timedelta(seconds=platform.long_docker_timeout)
    while True:
        info = await _committed_image(platform, image)
        if info is not None:
            platform.log.info("Snapshot %s: adopted %s, committed while the service restarted", image_id,
                              image.reference)
            await _saved(platform, image_id, info)
            return
        if utcnow() >= deadline:
            await asyncio.to_thread(
                _finish, platform, image_id, ImageState.failed,
                error=f"interrupted by a restart of the labdeck service, and the Docker engine had no image "
                      f"{image.reference} {platform.long_docker_timeout} s later; save the snapshot again")
            return
        await asyncio.sleep(interval)


async def _committed_image(platform, image: UserImage) -> dict | None:
    """This snapshot's image (``inspect_image``), if the engine has it."""
    try:
        info = await platform.docker.call(image.source_host, "inspect_image", image.reference)
    except ImageNotFound:
        return None
    except (DockerException, OSError) as e:
        platform.log.warning("Snapshot %s: cannot ask the engine for %s yet: %s", image.id, image.reference, e)
        return None
    return info if is_commit_of(info, image) else None


def is_commit_of(info: dict, image: UserImage) -> bool:
    """Whether the engine's image (``inspect_image``) is this snapshot's commit: made from its
    source session, no earlier than the snapshot began (an older image may carry the same name)."""
    labels = (info.get("Config") or {}).get("Labels") or {}
    created = datetime.fromisoformat(info["Created"][:19])  # RFC 3339 with nanoseconds, in UTC
    return labels.get("labdeck.source") == image.source_workload and created >= image.created_at - CLOCK_SLACK


def image_row(platform, image_id: int) -> UserImage | None:
    with platform.db.session() as s:
        return s.get(UserImage, image_id)
