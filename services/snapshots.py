"""Save a running session as an image in its owner's private repository ("save snapshot").

``docker commit`` runs in the background, on the pool kept for long Docker operations, while
the session stays usable; the image row goes ``saving`` -> ``saved`` or ``failed`` (with the
reason). Bind mounts are never part of a commit, so mapped data stays out of the image.
"""

import asyncio
import re

from docker.errors import DockerException
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
        result = await platform.docker.call_long(
            image.source_host, "commit", container_id, repository=image.repository, tag=image.tag,
            message=f"snapshot of session {image.source_workload}", author=image.created_by, conf=conf,
            pause=False,  # the session stays usable while its layer is copied
        )
        inspected = await platform.docker.call(image.source_host, "inspect_image", result["Id"])
    except (DockerException, OSError, KeyError) as e:
        reason = getattr(e, "explanation", None) or str(e)
        await asyncio.to_thread(_finish, platform, image_id, ImageState.failed, error=reason)
        return
    await asyncio.to_thread(_finish, platform, image_id, ImageState.saved, docker_id=result["Id"],
                            size=inspected.get("Size"))
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


def recover_interrupted(platform) -> int:
    """Snapshots left ``saving`` by a service restart: the commit died with the process."""
    with platform.db.session() as s:
        stuck = list(s.scalars(select(UserImage).where(UserImage.state == ImageState.saving.value)))
        for image in stuck:
            image.state = ImageState.failed.value
            image.error = "interrupted by a restart of the labdeck service; save the snapshot again"
            image.finished_at = utcnow()
        return len(stuck)
