"""Private repository (私有仓库): pages and JSON API for users' images: lists, sharing,
rename/retag/kind, delete; and the image choices every picker offers."""

import asyncio

from tornado import web

from services import repository
from services.errors import OptionError
from services.images import KINDS

from .base import APIHandler, BaseHandler


class ImageMixin:
    async def image_or_404(self, image_id: str) -> dict:
        view = await asyncio.to_thread(repository.get_image, self.platform, self.requester, int(image_id))
        if view is None:
            raise web.HTTPError(404, "No such image")
        return view

    async def owned_or_404(self, image_id: str) -> dict:
        view = await self.image_or_404(image_id)
        if "members" not in view:  # members may use it, not manage it
            raise web.HTTPError(404, "No such image")
        return view

    async def _guarded(self, coro):
        """Run a change; a refusal becomes 400 (bad input) or 409 (in use, naming the workloads)."""
        try:
            return await coro
        except OptionError as e:
            raise self.option_error(e) from None

    async def members(self, image_id: str, add, remove) -> list[dict]:
        await self.owned_or_404(image_id)
        return await self._guarded(asyncio.to_thread(
            repository.change_members, self.platform, self.requester, int(image_id), add, remove))

    async def update(self, image_id: str, raw) -> dict:
        await self.owned_or_404(image_id)
        return await self._guarded(repository.update_image(self.platform, self.requester, int(image_id), raw))

    async def remove(self, image_id: str) -> dict:
        view = await self.owned_or_404(image_id)
        await self._guarded(repository.delete_image(self.platform, self.requester, int(image_id)))
        return view


# ---------------------------------------------------------------- pages


class ImagesPage(BaseHandler):
    @web.authenticated
    async def get(self):
        lists = await asyncio.to_thread(repository.repository_of, self.platform, self.requester)
        self.render_page("images.html", page_title="Private repository", active_module="images",
                         notice=self.pop_flash(), own=lists["own"], shared=lists["shared"],
                         open_share=self.get_argument("share", ""))


class ImageAction(ImageMixin, BaseHandler):
    """The page's dialogs: add/remove a member, rename/retag/kind, delete."""

    @web.authenticated
    async def post(self, image_id, action):
        back = self.settings["service_prefix"] + "images"
        try:
            if action == "members":
                entry = {"kind": self.get_body_argument("kind", ""), "name": self.get_body_argument("name", "")}
                op = self.get_body_argument("op", "add")
                await self.members(image_id, [entry] if op == "add" else [], [entry] if op == "remove" else [])
                who = "department" if entry["kind"] == "group" else "user"
                self.flash(f"{'Shared with' if op == 'add' else 'No longer shared with'} {who} {entry['name'].strip()}.")
                back += f"?share={image_id}"
            elif action == "update":
                raw = {k: self.get_body_argument(k) for k in ("name", "tag", "kind")
                       if self.get_body_argument(k, None) is not None}
                view = await self.update(image_id, raw)
                self.flash(f"Image is now {view['name']}:{view['tag']} ({view['kind_title']}).")
            elif action == "delete":
                view = await self.remove(image_id)
                self.flash(f"Deleted image {view['name']}:{view['tag']}.")
        except web.HTTPError as e:
            if e.status_code not in (400, 409):
                raise
            self.flash(e.log_message, error=True)
            if action == "members":
                back += f"?share={image_id}"
        self.redirect(back)


# ---------------------------------------------------------------- JSON API


class ImagesAPI(APIHandler):
    @web.authenticated
    async def get(self):
        lists = await asyncio.to_thread(repository.repository_of, self.platform, self.requester)
        lists["images"] = [image for kind in lists["own"].values() for image in kind]  # all of mine, one list
        self.write_json(lists)


class ImageAPI(ImageMixin, APIHandler):
    @web.authenticated
    async def get(self, image_id):
        self.write_json(await self.image_or_404(image_id))

    @web.authenticated
    async def patch(self, image_id):
        self.write_json(await self.update(image_id, self.json_body()))

    @web.authenticated
    async def delete(self, image_id):
        await self.remove(image_id)
        self.set_status(204)
        self.finish()


class ImageMembersAPI(ImageMixin, APIHandler):
    @web.authenticated
    async def post(self, image_id):
        body = self.json_body()
        self.write_json({"members": await self.members(image_id, body.get("add", []), body.get("remove", []))})


class ImageChoicesAPI(APIHandler):
    """What a picker offers for one kind of workload: platform, own and shared images, grouped."""

    @web.authenticated
    async def get(self):
        kind = self.get_argument("kind", "notebook")
        if kind not in KINDS:
            raise web.HTTPError(400, f"kind: choose one of: {', '.join(KINDS)}")
        choices = await asyncio.to_thread(self.platform.catalog.images_for, self.requester, kind)
        groups: dict[str, list] = {}
        for c in choices:
            groups.setdefault(c.group, []).append({"name": c.name, "title": c.title, "description": c.description,
                                                   "kind_label": c.kind_label})
        self.write_json({"kind": kind, "groups": [{"group": g, "images": items} for g, items in groups.items()]})


IMAGE = r"(?P<image_id>[0-9]{1,12})"
default_handlers = [
    (r"images", ImagesPage),
    (rf"images/{IMAGE}/(?P<action>members|update|delete)", ImageAction),
    (r"api/images", ImagesAPI),
    (r"api/images/choices", ImageChoicesAPI),
    (rf"api/images/{IMAGE}", ImageAPI),
    (rf"api/images/{IMAGE}/members", ImageMembersAPI),
]
