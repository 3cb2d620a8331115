"""Which images a user may run, for which kind of workload.

Every image picker and every allowed-image check goes through :meth:`ImageCatalog.images_for`
and :meth:`ImageCatalog.check`, so an image that is not offered is refused everywhere.
"""

from dataclasses import dataclass

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
    group: str  # heading in the picker: "Platform images", "My images" or "Shared with me"
    kind_label: str = ""  # what it is for, shown beside the title



KIND_WORDS = {"notebook": "notebooks", "debug": "remote debug", "job": "jobs"}


def kinds_label(kinds) -> str:
    words = [KIND_WORDS[k] for k in KINDS if k in kinds]
    return "for " + (", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else words[0])


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
                    kind_label=kinds_label(kinds),
                )
            )
        return choices + self.saved_images(requester)

    def saved_images(self, requester: Requester) -> list[ImageChoice]:
        """The user's own saved images, then those shared with them or their departments. Every
        picker offers them (their kind only decides the repository list they are in)."""
        platform = self.parent
        if getattr(platform, "db", None) is None:
            return []
        from .repository import usable_images
        from .snapshots import KIND_TITLES

        mine, shared = [], []
        for image, own in usable_images(platform, requester):
            source = f", snapshot of {image.source_name or image.source_workload}" if image.source_workload else ""
            choice = ImageChoice(
                name=image.reference, title=f"{image.name}:{image.tag}" + ("" if own else f" (from {image.owner})"),
                description=f"{KIND_TITLES.get(image.kind, image.kind).capitalize()} image{source}",
                kinds=KINDS, group="My images" if own else "Shared with me",
                kind_label=f"{KIND_TITLES.get(image.kind, image.kind)} image")
            (mine if own else shared).append(choice)
        return mine + shared

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
