"""Private repository (私有仓库): users' saved images, shared, renamed, re-kinded and deleted, and
getting an image onto the host that runs it.

Images live in the Docker engine under one namespace per user (:func:`snapshots.repository_for`).
When :class:`ImageRegistry` names a registry, saved images are pushed there too and a host that
lacks an image pulls it before a workload starts; without one, everything stays on the local engine.
Who may *run* an image is decided by :class:`services.images.ImageCatalog`, which calls
:func:`usable_images` here, so the pickers and the checks never disagree.
"""

import asyncio

from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from . import sharing, snapshots
from .errors import InUseError, OptionError
from .identity import Requester
from .models import ImageMember, ImageState, UserImage, Workload, WorkloadState
from .snapshots import IMAGE_KINDS, check_snapshot_options, image_row, repository_for


class ImageRegistry(LoggingConfigurable):
    url = Unicode(
        "",
        help="""A Docker registry (``host[:port]``, e.g. ``registry.lab.example:5000``) where saved
        images are pushed and from which hosts pull the images they lack. Empty (the default): images
        stay in the local Docker engine, which is enough when all hosts share it.""",
    ).tag(config=True)
    username = Unicode("", help="User name for the registry (empty: no login).").tag(config=True)
    password = Unicode("", help="Password or token for the registry.").tag(config=True)

    @property
    def enabled(self) -> bool:
        return bool(self.url.strip())

    def auth_config(self) -> dict | None:
        return {"username": self.username, "password": self.password} if self.username else None

    def prefix(self) -> str:
        return self.url.strip().rstrip("/") + "/" if self.enabled else ""


class ImageInUse(InUseError):
    """The image is used by workloads that have not ended (a queued job counts)."""

    def __init__(self, reference: str, workloads: list[str]):
        self.reference = reference
        super().__init__("image", f"{reference} is in use by {', '.join(workloads)}; "
                                  "end them (or delete the queued jobs) first", workloads)


# ---------------------------------------------------------------- reading


def members_of(session, image_id: int) -> list[ImageMember]:
    return list(session.scalars(select(ImageMember).where(ImageMember.image_id == image_id)
                                .order_by(ImageMember.kind, ImageMember.name)))


def usable_images(platform, requester: Requester) -> list[tuple[UserImage, bool]]:
    """Saved images this user may run: (image, mine) for their own and those shared with them or
    their departments. Admins manage everyone's images but run only these, like anyone."""
    with platform.db.read() as s:
        rows = s.scalars(select(UserImage).where(UserImage.state == ImageState.saved.value)
                         .order_by(UserImage.created_at.desc(), UserImage.id.desc()))
        out = []
        for image in rows:
            if image.owner == requester.name:
                out.append((image, True))
            elif sharing.includes(members_of(s, image.id), requester):
                out.append((image, False))
        return out


def in_use_by(session, reference: str) -> list[str]:
    """Workloads not yet ended (queued jobs included) that run or will run this image."""
    return sorted(session.scalars(select(Workload.id).where(
        Workload.image == reference, Workload.state != WorkloadState.ended.value)))


def image_view(session, image: UserImage, requester: Requester | None = None, detail: bool = False) -> dict:
    view = snapshots.image_view(image)
    view["mine"] = requester is not None and image.owner == requester.name
    if detail:
        view["members"] = [sharing.Member(m.kind, m.name).as_dict() for m in members_of(session, image.id)]
        view["in_use_by"] = in_use_by(session, image.reference)
    return view


def _visible(session, image: UserImage | None, requester: Requester) -> bool:
    return image is not None and (requester.admin or image.owner == requester.name
                                  or sharing.includes(members_of(session, image.id), requester))


def get_image(platform, requester: Requester, image_id: int) -> dict | None:
    """The image if this user may see it (owner, admin, or a member), else None (404). Its owner
    and admins also get its members and the workloads that use it."""
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        if not _visible(s, image, requester):
            return None
        manage = requester.admin or image.owner == requester.name
        return image_view(s, image, requester, detail=manage)


def repository_of(platform, requester: Requester) -> dict:
    """The repository page: my images by kind (with members and use), and images shared with me."""
    with platform.db.session() as s:
        lists = {kind: [] for kind in IMAGE_KINDS}
        shared = []
        for image in s.scalars(select(UserImage).order_by(UserImage.created_at.desc(), UserImage.id.desc())):
            if image.owner == requester.name:
                lists[image.kind].append(image_view(s, image, requester, detail=True))
            elif image.state == ImageState.saved.value and sharing.includes(members_of(s, image.id), requester):
                shared.append(image_view(s, image, requester))
        return {"own": lists, "shared": shared}


def _own(session, requester: Requester, image_id: int) -> UserImage:
    image = session.get(UserImage, image_id)
    if image is None or not (requester.admin or image.owner == requester.name):
        raise LookupError(image_id)
    return image


# ---------------------------------------------------------------- sharing


def change_members(platform, requester: Requester, image_id: int, add=(), remove=()) -> list[dict]:
    add, remove = sharing.parse_changes(add, remove)
    with platform.db.session() as s:
        image = _own(s, requester, image_id)
        if add and image.state != ImageState.saved.value:
            raise OptionError("add", f"the image is {image.state}; only a saved image can be shared")
        members = sharing.apply_changes(s, members_of(s, image_id), add, remove,
                                        lambda m: ImageMember(image_id=image_id, kind=m.kind, name=m.name))
        return [m.as_dict() for m in members]


# ---------------------------------------------------------------- rename, kind, delete


def _hosts(platform) -> list[str]:
    """One host name per Docker engine: hosts that share an engine share its images."""
    seen, names = set(), []
    for host in platform.resources.all_hosts():
        if host.docker_url not in seen:
            seen.add(host.docker_url)
            names.append(host.name)
    return names


def _plan_update(platform, requester: Requester, image_id: int, raw) -> tuple[dict, dict]:
    """Validate a rename/retag/kind change; returns (old, new) name, tag, kind, reference."""
    if not isinstance(raw, dict):
        raise OptionError("image", "must be an object with name, tag and/or kind")
    with platform.db.session() as s:
        image = _own(s, requester, image_id)
        if image.state != ImageState.saved.value:
            raise OptionError("image", f"the image is {image.state}; only a saved image can be changed")
        merged = {"name": raw.get("name", image.name), "tag": raw.get("tag", image.tag),
                  "kind": raw.get("kind", image.kind)}
        name, tag, kind = check_snapshot_options(merged)
        old = {"name": image.name, "tag": image.tag, "kind": image.kind, "reference": image.reference,
               "docker_id": image.docker_id}
        new = {"name": name, "tag": tag, "kind": kind,
               "repository": repository_for(platform, image.owner, name)}
        new["reference"] = f"{new['repository']}:{tag}"
        if new["reference"] != old["reference"]:
            busy = in_use_by(s, old["reference"])
            if busy:
                raise ImageInUse(old["reference"], busy)
            clash = s.scalar(select(UserImage.id).where(UserImage.owner == image.owner, UserImage.name == name,
                                                        UserImage.tag == tag, UserImage.id != image_id))
            if clash is not None:
                raise OptionError("name", f"you already have an image {name}:{tag}; choose another name or tag")
        return old, new


async def update_image(platform, requester: Requester, image_id: int, raw) -> dict:
    """Rename or retag (the engine gets the new tag, then loses the old one) and/or change the kind."""
    old, new = await asyncio.to_thread(_plan_update, platform, requester, image_id, raw)
    renamed = new["reference"] != old["reference"]
    if renamed:
        tagged = False
        for host in _hosts(platform):
            try:
                await platform.docker.call(host, "tag", old["docker_id"], new["repository"], new["tag"])
                tagged = True
            except (ImageNotFound, NotFound):
                continue
        if not tagged:
            raise OptionError("image", f"{old['reference']} is no longer in the Docker engine; delete it instead")
    try:
        await asyncio.to_thread(_record_update, platform, image_id, new)
    except IntegrityError:  # a rename to the same name that raced this one
        raise OptionError("name", f"you already have an image {new['name']}:{new['tag']}") from None
    if renamed:
        await _untag_everywhere(platform, old["reference"])
        await push_if_configured(platform, image_id)
    return await asyncio.to_thread(get_image, platform, requester, image_id)


def _record_update(platform, image_id: int, new: dict) -> None:
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        image.name, image.tag, image.kind, image.repository = new["name"], new["tag"], new["kind"], new["repository"]
        s.flush()


async def _untag_everywhere(platform, reference: str) -> None:
    """Remove a tag from every engine (the layers go once no tag and no container needs them)."""
    for host in _hosts(platform):
        try:
            await platform.docker.call(host, "remove_image", reference, noprune=False)
        except (ImageNotFound, NotFound):
            continue


def _plan_delete(platform, requester: Requester, image_id: int) -> UserImage:
    with platform.db.session() as s:
        image = _own(s, requester, image_id)
        if image.state == ImageState.saving.value:
            raise OptionError("image", "the snapshot is still being saved; delete it once it is saved or failed")
        busy = in_use_by(s, image.reference)
        if busy:
            raise ImageInUse(image.reference, busy)
        return image


async def delete_image(platform, requester: Requester, image_id: int) -> None:
    """Remove the image from every engine, then its record and members. Refused (ImageInUse)
    while a workload runs it or a queued job waits for it."""
    image = await asyncio.to_thread(_plan_delete, platform, requester, image_id)
    try:
        await _untag_everywhere(platform, image.reference)
    except APIError as e:  # e.g. a stopped container of an ended workload still holds it
        raise OptionError("image", f"the Docker engine refused to remove it: {e.explanation or e}") from None
    await asyncio.to_thread(_forget, platform, image_id)


def _forget(platform, image_id: int) -> None:
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        if image is not None:
            s.delete(image)


# ---------------------------------------------------------------- registry


async def push_if_configured(platform, image_id: int) -> None:
    """Push a saved image to the registry, when one is configured; records where it went or why not."""
    registry = platform.registry
    if not registry.enabled:
        return
    image = await asyncio.to_thread(image_row, platform, image_id)
    remote_repo = registry.prefix() + image.repository
    host = image.source_host or _hosts(platform)[0]
    try:
        await platform.docker.call(host, "tag", image.docker_id, remote_repo, image.tag)
        output = await platform.docker.call_long(host, "push", remote_repo, tag=image.tag,
                                                 auth_config=registry.auth_config(), stream=False)
        error = _stream_error(output)
    except (DockerException, OSError) as e:
        error = getattr(e, "explanation", None) or str(e)
    await asyncio.to_thread(_record_push, platform, image_id, None if error else f"{remote_repo}:{image.tag}",
                            error)


def _stream_error(output) -> str | None:
    """docker-py returns push/pull output as JSON lines; a failure is an 'error' line, not an exception."""
    import json

    for line in (output or "").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            return str(message["error"])
    return None


def _record_push(platform, image_id: int, pushed_to: str | None, error: str | None) -> None:
    with platform.db.session() as s:
        image = s.get(UserImage, image_id)
        if image is None:
            return
        image.pushed_to = pushed_to
        if error:
            image.error = f"saved locally; pushing to the registry failed: {error}"
            platform.log.warning("Pushing image %s failed: %s", image.reference, error)


def registry_source(platform, reference: str) -> str | None:
    """Where a host that lacks ``reference`` pulls it from: the registry copy of a user's image."""
    with platform.db.session() as s:
        for image in s.scalars(select(UserImage).where(UserImage.state == ImageState.saved.value,
                                                       UserImage.pushed_to.is_not(None))):
            if image.reference == reference:
                return image.pushed_to
    return None


async def ensure_image(platform, host: str, reference: str) -> dict:
    """The image's inspect data on ``host``, pulling it from the registry first when the host lacks
    it. Raises OptionError("image", ...) when it is neither there nor in the registry."""
    try:
        return await platform.docker.call(host, "inspect_image", reference)
    except (ImageNotFound, NotFound):
        pass
    source = await asyncio.to_thread(registry_source, platform, reference) if platform.registry.enabled else None
    if source is None:
        raise OptionError("image", f"{reference} is not present on host {host}; an admin must build or pull it")
    repo, _, tag = source.rpartition(":")
    try:
        output = await platform.docker.call_long(host, "pull", repo, tag=tag,
                                                 auth_config=platform.registry.auth_config())
        error = _stream_error(output)
        if error is None:
            local_repo, _, local_tag = reference.rpartition(":")
            await platform.docker.call(host, "tag", source, local_repo, local_tag)
    except (DockerException, OSError) as e:
        error = getattr(e, "explanation", None) or str(e)
    if error:
        raise OptionError("image", f"{reference} could not be pulled to host {host} from {source}: {error}")
    return await platform.docker.call(host, "inspect_image", reference)
