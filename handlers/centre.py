"""Personal centre (个人中心): the signed-in user's profile, running workloads, usage this month
and notifications. Everything here is the requester's own; no route takes a user name."""

import asyncio
from urllib.parse import quote, urlsplit

from tornado import web

from services import notifications, usage
from services.accounts import AccountStore
from services.errors import OptionError

from .base import APIHandler, BaseHandler

KIND_TITLES = {"notebook": "Notebook server", "debug": "Remote debug", "job": "Training / evaluation",
               "cache": "Cache task"}
MAX_IDS = 500


class CentreMixin:
    async def profile(self) -> dict:
        requester = self.requester
        account = await asyncio.to_thread(AccountStore(self.platform.db).get, requester.name)
        return {"name": requester.name, "email": account.email if account else None,
                "departments": sorted(requester.groups), "admin": requester.admin}

    def workload_url(self, item: dict) -> str:
        """Where a workload's own page is: the server, the session's view, the job's log, the cache."""
        svc, hub = self.settings["service_prefix"], self.hub_auth.hub_prefix
        kind, running = item["kind"], item["state"] == "running"
        if kind == "notebook":
            if not running:
                return hub + "home"
            root = hub[: -len("hub/")] if hub.endswith("hub/") else "/"
            server = quote(item["name"], safe="") + "/" if item["name"] else ""
            return f"{root}user/{quote(self.requester.name, safe='@~')}/{server}"
        if kind == "debug":
            return svc + (f"debug/{item['id']}/open" if running else "debug")
        if kind == "job":
            return svc + f"jobs/{item['id']}/log"
        return svc + f"caches/{item['id']}"

    async def workloads(self) -> list[dict]:
        items = await asyncio.to_thread(usage.active_workloads, self.platform, self.requester)
        for item in items:
            item["url"] = self.workload_url(item)
            item["kind_title"] = KIND_TITLES.get(item["kind"], item["kind"])
        return items

    async def load_usage(self, month: str | None) -> dict:
        try:
            return await asyncio.to_thread(usage.month_usage, self.platform, self.requester, month)
        except OptionError as e:
            raise self.option_error(e) from None

    async def load_notifications(self) -> dict:
        return await asyncio.to_thread(notifications.list_for, self.platform.db, self.requester.name)

    async def mark_read(self, ids: list[int] | None) -> int:
        """Only the requester's own notifications change; anyone else's IDs are ignored."""
        return await asyncio.to_thread(notifications.mark_read, self.platform.db, self.requester.name, ids)


def check_ids(ids) -> list[int]:
    if (not isinstance(ids, list) or not ids or len(ids) > MAX_IDS
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise web.HTTPError(400, f"ids: give a list of up to {MAX_IDS} notification IDs, or all: true")
    return ids


# ---------------------------------------------------------------- pages


class CentrePage(CentreMixin, BaseHandler):
    @web.authenticated
    async def get(self):
        month = self.get_argument("month", "") or None
        profile, workloads, used, notes = await asyncio.gather(
            self.profile(), self.workloads(), self.load_usage(month), self.load_notifications())
        self.render_page("centre.html", page_title="Personal centre", active_module="centre",
                         profile=profile, workloads=workloads, usage=used, notes=notes,
                         this_month=month is None, notice=self.pop_flash())


class MarkReadAction(CentreMixin, BaseHandler):
    """The page's forms and every banner's "Dismiss": mark read, then back where the user was."""

    def next_url(self) -> str:
        """``next`` if it is a path of this service (never another site), else the centre."""
        svc = self.settings["service_prefix"]
        target = self.get_body_argument("next", "")
        parts = urlsplit(target)
        if (parts.scheme or parts.netloc or not parts.path.startswith(svc) or "\\" in target
                or any(ord(ch) < 32 for ch in target) or "/../" in parts.path + "/" or "//" in parts.path):
            return svc + "centre"
        return target

    @web.authenticated
    async def post(self):
        if self.get_body_argument("all", "") == "1":
            ids = None
        else:
            try:
                ids = check_ids([int(i) for i in self.get_body_arguments("id")])
            except ValueError:
                raise web.HTTPError(400, "ids: give the notification IDs as numbers") from None
        marked = await self.mark_read(ids)
        target = self.next_url()
        if urlsplit(target).path == self.settings["service_prefix"] + "centre":
            self.flash(f"Marked {marked} notification{'' if marked == 1 else 's'} as read.")
        self.redirect(target)


# ---------------------------------------------------------------- JSON API


class MeAPI(CentreMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json(await self.profile())


class MyWorkloadsAPI(CentreMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json({"workloads": await self.workloads()})


class MyUsageAPI(CentreMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json(await self.load_usage(self.get_argument("month", "") or None))


class MyNotificationsAPI(CentreMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.write_json(await self.load_notifications())


class MarkReadAPI(CentreMixin, APIHandler):
    @web.authenticated
    async def post(self):
        body = self.json_body()
        ids = None if body.get("all") is True else check_ids(body.get("ids"))
        marked = await self.mark_read(ids)
        listed = await self.load_notifications()
        self.write_json({"marked": marked, "unread": listed["unread"]})


default_handlers = [
    (r"centre", CentrePage),
    (r"centre/notifications/read", MarkReadAction),
    (r"api/me", MeAPI),
    (r"api/me/workloads", MyWorkloadsAPI),
    (r"api/me/usage", MyUsageAPI),
    (r"api/me/notifications", MyNotificationsAPI),
    (r"api/me/notifications/read", MarkReadAPI),
]
