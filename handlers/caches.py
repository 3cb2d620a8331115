"""High-speed cache (高速缓存): pages and JSON API for cache tasks."""

import asyncio

from tornado import web

from services import caches, outputs
from services.errors import OptionError
from services.models import CacheState

from .base import APIHandler, BaseHandler


class CacheMixin:
    async def cache_or_404(self, cache_id: str, detail: bool = False) -> dict:
        view = await asyncio.to_thread(caches.get_cache, self.platform, self.requester, cache_id, detail)
        if view is None:
            raise web.HTTPError(404, "No such cache")
        return view

    async def owned_or_404(self, cache_id: str) -> dict:
        view = await self.cache_or_404(cache_id, detail=True)
        if not (view["mine"] or self.requester.admin):
            raise web.HTTPError(404, "No such cache")  # members may read it, not change it
        return view

    async def create(self, raw: dict, copy_anyway: bool) -> dict:
        try:
            cache_id = await asyncio.to_thread(caches.create, self.platform, self.requester, raw,
                                               copy_anyway=copy_anyway)
        except caches.DuplicateCache:
            raise
        except OptionError as e:
            raise self.option_error(e) from None
        await self.platform.cache_runner.kick()
        return await self.cache_or_404(cache_id)

    async def cancel(self, cache_id: str) -> dict:
        view = await self.owned_or_404(cache_id)
        if view["state"] not in (CacheState.queued.value, CacheState.copying.value):
            raise web.HTTPError(400, f"cache: it is {view['state']}; only a queued or copying cache can be cancelled")
        await self.platform.cache_runner.cancel(cache_id)
        return await self.cache_or_404(cache_id)

    async def remove(self, cache_id: str) -> None:
        await self.owned_or_404(cache_id)
        try:
            folder = await asyncio.to_thread(caches.delete, self.platform, self.requester, cache_id)
        except OptionError as e:
            raise self.option_error(e) from None
        storage = folder.parent
        if folder.exists():
            await asyncio.to_thread(outputs.remove_tree, folder, storage)

    async def members(self, cache_id: str, add, remove) -> list[dict]:
        await self.owned_or_404(cache_id)
        try:
            return await asyncio.to_thread(caches.change_members, self.platform, self.requester, cache_id,
                                           add, remove)
        except OptionError as e:
            raise self.option_error(e) from None


def form_raw(handler) -> dict:
    return {k: handler.get_body_argument(k, "") for k in ("name", "region", "source", "description")}


# ---------------------------------------------------------------- pages


class CachesPage(CacheMixin, BaseHandler):
    @web.authenticated
    async def get(self):
        lists = await asyncio.to_thread(caches.list_caches, self.platform, self.requester)
        self.render_page("caches.html", page_title="High-speed cache", active_module="cache",
                         notice=self.pop_flash(), **lists)


class NewCachePage(CacheMixin, BaseHandler):
    async def form(self, values: dict, error: str = "", existing: dict | None = None, status: int = 200):
        regions = await asyncio.to_thread(caches.region_usage, self.platform)
        settings = self.platform.cache_settings
        self.render_page("caches-new.html", status=status, page_title="New cache task", active_module="cache",
                         values=values, error=error, existing=existing, regions=regions,
                         allowed_urls=settings.allowed_urls, quota_gb=settings.quota_for(self.requester),
                         roots=await asyncio.to_thread(self.platform.paths.roots_for, self.requester))

    @web.authenticated
    async def get(self):
        await self.form({"region": self.get_argument("region", "")})

    @web.authenticated
    async def post(self):
        raw = form_raw(self)
        try:
            view = await self.create(raw, copy_anyway=self.get_body_argument("copy_anyway", "") == "1")
        except caches.DuplicateCache as dup:
            return await self.form(raw, existing=dup.existing, status=409)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            return await self.form(raw, error=e.log_message, status=400)
        self.flash(f"Cache task {view['id']} created: {view['state']}.")
        self.redirect(self.settings["service_prefix"] + "caches")


class CacheDetailPage(CacheMixin, BaseHandler):
    @web.authenticated
    async def get(self, cache_id):
        view = await self.cache_or_404(cache_id, detail=True)
        self.render_page("cache-detail.html", page_title=f"Cache {view['name']}", active_module="cache",
                         cache=view, notice=self.pop_flash())


class CacheAction(CacheMixin, BaseHandler):
    """The detail page's forms: share, add/remove a member, cancel, delete."""

    @web.authenticated
    async def post(self, cache_id, action):
        back = self.settings["service_prefix"] + f"caches/{cache_id}"
        try:
            if action == "share":
                await self.owned_or_404(cache_id)
                await asyncio.to_thread(caches.share, self.platform, self.requester, cache_id)
                self.flash("The cache is shared now; add the users and departments who may use it.")
            elif action == "members":
                entry = {"kind": self.get_body_argument("kind", ""), "name": self.get_body_argument("name", "")}
                op = self.get_body_argument("op", "add")
                await self.members(cache_id, [entry] if op == "add" else [], [entry] if op == "remove" else [])
                who = "department" if entry["kind"] == "group" else "user"
                self.flash(f"{'Added' if op == 'add' else 'Removed'} {who} {entry['name']}.")
            elif action == "cancel":
                await self.cancel(cache_id)
                self.flash("Copying was cancelled and its space freed.")
            elif action == "delete":
                await self.remove(cache_id)
                self.flash(f"Deleted cache {cache_id}.")
                back = self.settings["service_prefix"] + "caches"
        except web.HTTPError as e:
            if e.status_code not in (400, 409):
                raise
            self.flash(e.log_message, error=True)
        self.redirect(back)


# ---------------------------------------------------------------- JSON API


class CachesAPI(CacheMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json(await asyncio.to_thread(caches.list_caches, self.platform, self.requester))

    @web.authenticated
    async def post(self):
        body = self.json_body()
        copy_anyway = bool(body.pop("copy_anyway", False))
        try:
            self.write_json(await self.create(body, copy_anyway), status=201)
        except caches.DuplicateCache as dup:
            self.write_json({"status": 409, "message": str(dup), "existing": dup.existing}, status=409)


class CacheAPI(CacheMixin, APIHandler):
    @web.authenticated
    async def get(self, cache_id):
        self.write_json(await self.cache_or_404(cache_id, detail=True))

    @web.authenticated
    async def delete(self, cache_id):
        await self.remove(cache_id)
        self.set_status(204)
        self.finish()


class CancelAPI(CacheMixin, APIHandler):
    @web.authenticated
    async def post(self, cache_id):
        self.write_json(await self.cancel(cache_id))


class ShareAPI(CacheMixin, APIHandler):
    @web.authenticated
    async def post(self, cache_id):
        await self.owned_or_404(cache_id)
        await asyncio.to_thread(caches.share, self.platform, self.requester, cache_id)
        self.write_json(await self.cache_or_404(cache_id, detail=True))


class MembersAPI(CacheMixin, APIHandler):
    @web.authenticated
    async def post(self, cache_id):
        body = self.json_body()
        self.write_json({"members": await self.members(cache_id, body.get("add", []), body.get("remove", []))})


class CacheOptionsAPI(APIHandler):
    """What the form offers: regions with cache capacity and use, the quota, allowed sources."""

    @web.authenticated
    async def get(self):
        settings = self.platform.cache_settings
        roots = await asyncio.to_thread(self.platform.paths.roots_for, self.requester)
        self.write_json({
            "regions": await asyncio.to_thread(caches.region_usage, self.platform),
            "quota_gb": settings.quota_for(self.requester),
            "allowed_urls": settings.allowed_urls,
            "roots": [r.__dict__ for r in roots if not r.name.startswith("cache:")],
        })


CACHE = r"(?P<cache_id>cache-[0-9a-f]{8})"
default_handlers = [
    (r"caches", CachesPage),
    (r"caches/new", NewCachePage),
    (rf"caches/{CACHE}", CacheDetailPage),
    (rf"caches/{CACHE}/(?P<action>share|members|cancel|delete)", CacheAction),
    (r"api/caches", CachesAPI),
    (r"api/caches/options", CacheOptionsAPI),
    (rf"api/caches/{CACHE}", CacheAPI),
    (rf"api/caches/{CACHE}/cancel", CancelAPI),
    (rf"api/caches/{CACHE}/share", ShareAPI),
    (rf"api/caches/{CACHE}/members", MembersAPI),
]
