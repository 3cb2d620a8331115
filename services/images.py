"""Which images a user may run, for which kind of workload.

Every image picker and every allowed-image check goes through :meth:`ImageCatalog.images_for`
and :meth:`ImageCatalog.check`, so an image that is not offered is refused everywhere.
"""

from dataclasses import dataclass

from sqlalchemy import select
from traitlets import Dict, List, TraitError, validate
from traitlets.config import LoggingConfigurable

from .errors import OptionError
from .identity import Requester

KINDS = ("notebook", "debug", "job")


@dataclass(frozen=True)
class ImageChoice:
    name: str  # the Docker image reference
    title: str
    description: str
    kinds: tuple[str, ...]
    group: str  # heading in the picker: "Platform images", later "My images", "Shared with me"


class ImageCatalog(LoggingConfigurable):
    platform_images = List(
        Dict(),
        help="""Images every user may run (or only members of ``groups`` when given):
        [{"name": "labdeck/notebook:latest", "title": "JupyterLab", "description": "...",
          "kinds": ["notebook", "debug", "job"], "groups": []}]
        """,
    ).tag(config=True)

    @validate("platform_images")
    def _check_platform_images(self, proposal):
        for i, spec in enumerate(proposal.value):
            if not isinstance(spec.get("name"), str) or not spec["name"]:
                raise TraitError(f"ImageCatalog.platform_images[{i}] needs a 'name'")
            unknown = set(spec.get("kinds", KINDS)) - set(KINDS)
            if unknown:
                raise TraitError(
                    f"ImageCatalog.platform_images[{i}]: unknown kinds {sorted(unknown)}; use {KINDS}"
                )
        return proposal.value

    def images_for(self, requester: Requester, kind: str) -> list[ImageChoice]:
        choices = []
        for spec in self.platform_images:
            groups = set(spec.get("groups") or ())
            if groups and not (groups & requester.groups) and not requester.admin:
                continue
            kinds = tuple(spec.get("kinds") or KINDS)
            if kind not in kinds:
                continue
            choices.append(
                ImageChoice(
                    name=spec["name"],
                    title=spec.get("title") or spec["name"],
                    description=spec.get("description", ""),
                    kinds=kinds,
                    group="Platform images",
                )
            )
        return choices + self.own_images(requester, kind)

    def own_images(self, requester: Requester, kind: str) -> list[ImageChoice]:
        """The user's saved images of this kind (their private repository)."""
        db = getattr(self.parent, "db", None)
        if db is None:
            return []
        from .models import ImageState, UserImage

        with db.session() as s:
            rows = s.scalars(select(UserImage).where(
                UserImage.owner == requester.name, UserImage.kind == kind,
                UserImage.state == ImageState.saved.value).order_by(UserImage.created_at.desc()))
            return [ImageChoice(name=row.reference, title=f"{row.name}:{row.tag}",
                                description=f"Saved from session {row.source_workload}" if row.source_workload else "",
                                kinds=(kind,), group="My images") for row in rows]

    def check(self, requester: Requester, kind: str, name, field: str = "image") -> ImageChoice:
        """The choice for ``name`` if this user may run it for ``kind``, else OptionError."""
        choices = self.images_for(requester, kind)
        if not isinstance(name, str) or not name.strip():
            offered = ", ".join(c.name for c in choices) or "none"
            raise OptionError(field, f"choose an image; offered to you: {offered}")
        for choice in choices:
            if choice.name == name.strip():
                return choice
        offered = ", ".join(c.name for c in choices) or "none"
        raise OptionError(
            field, f"'{name.strip()[:200]}' is not available to you; offered to you: {offered}"
        )
