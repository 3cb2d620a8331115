"""Remote debug (远程调试): pages and JSON API for long-lived containers reached by SSH."""

import asyncio

from tornado import web

from services import debug, snapshots
from services.errors import OptionError
from services.form_data import workload_form_context
from services.workloads import last_options

from .base import APIHandler, BaseHandler
from .forms import form_mounts
from .proxy import ProxyHandler, ProxyTarget

FORM_FIELDS = ("name", "image", "region", "cpu", "memory_gb", "gpus", "gpu_model", "ports", "password")


def options_from_form(handler) -> dict:
    """Form fields -> the JSON shape the API takes (the validator judges both alike)."""
    options = {key: handler.get_body_argument(key, "") for key in FORM_FIELDS}
    options["mounts"] = form_mounts(handler)
    return options


class SessionMixin:
    """Look a session up for the current user: 404 if missing or someone else's."""

    async def session_or_404(self, session_id: str) -> dict:
        session = await asyncio.to_thread(debug.get_session, self.platform, session_id)
        if session is None:
            raise web.HTTPError(404, "No such session")
        self.check_visible(session["user"], "session")
        return session

    async def create(self, raw) -> dict:
        try:
            workload = await debug.create_session(self.platform, self.requester, raw)
        except OptionError as e:
            raise self.option_error(e) from None
        self.platform.spawn_background(debug.wait_until_ready(self.platform, workload["id"]))
        return workload

    async def snapshot(self, session_id: str, raw) -> dict:
        await self.session_or_404(session_id)
        try:
            image = await snapshots.start_snapshot(self.platform, self.requester, session_id, raw)
        except OptionError as e:
            raise self.option_error(e) from None
        return snapshots.image_view(image)

    async def delete_ended(self, ids) -> list[str]:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise web.HTTPError(400, "ids: give a list of session IDs")
        try:
            return await asyncio.to_thread(debug.delete_sessions, self.platform, self.requester, ids)
        except OptionError as e:
            raise self.option_error(e) from None


# ---------------------------------------------------------------- pages


class DebugPage(SessionMixin, BaseHandler):
    @web.authenticated
    async def get(self):
        everyone = self.get_argument("all", "") == "1" and self.requester.admin
        sessions = await asyncio.to_thread(debug.list_sessions, self.platform, self.requester, everyone)
        images = await asyncio.to_thread(snapshots.images_of, self.platform, self.requester.name)
        self.render_page(
            "debug.html", page_title="Remote debug", active_module="debug", everyone=everyone,
            images=[snapshots.image_view(i) for i in images if i.source_workload][:10],
            running=[s for s in sessions if s["state"] != "ended"],
            ended=[s for s in sessions if s["state"] == "ended"],
            notice=self.pop_flash(), error="",
        )


class NewSessionPage(SessionMixin, BaseHandler):
    async def form(self, values: dict | None, error: str = "", status: int = 200):
        previous = values or await asyncio.to_thread(last_options, self.platform, self.requester.name, "debug")
        context = await asyncio.to_thread(workload_form_context, self.platform, self.requester, "debug", previous)
        self.render_page("debug-new.html", status=status, page_title="New remote-debug session",
                         active_module="debug", error=error, max_ports=self.platform.debug.max_ports, **context)

    @web.authenticated
    async def get(self):
        await self.form(None)

    @web.authenticated
    async def post(self):
        raw = options_from_form(self)
        try:
            session = await self.create(raw)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            return await self.form(raw, error=e.log_message, status=400)
        self.flash(f"Session {session['id']} is starting.")
        self.redirect(self.settings["service_prefix"] + "debug")


class TerminateAction(SessionMixin, BaseHandler):
    @web.authenticated
    async def post(self, session_id):
        await self.session_or_404(session_id)
        await debug.terminate_session(self.platform, session_id)
        self.flash(f"Session {session_id} was terminated.")
        self.redirect(self.settings["service_prefix"] + "debug")


class SnapshotAction(SessionMixin, BaseHandler):
    @web.authenticated
    async def post(self, session_id):
        raw = {k: self.get_body_argument(k, "") for k in ("name", "tag", "kind")}
        try:
            image = await self.snapshot(session_id, raw)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            self.flash(f"Snapshot not saved: {e.log_message}", error=True)
            return self.redirect(self.settings["service_prefix"] + "debug")
        self.flash(f"Saving snapshot {image['name']}:{image['tag']}; the session stays usable meanwhile.")
        self.redirect(self.settings["service_prefix"] + "debug")


class DeleteAction(SessionMixin, BaseHandler):
    @web.authenticated
    async def post(self):
        ids = self.get_body_arguments("ids")
        deleted = await self.delete_ended(ids)
        self.flash(f"Deleted {len(deleted)} session{'' if len(deleted) == 1 else 's'}.")
        self.redirect(self.settings["service_prefix"] + "debug")


# ---------------------------------------------------------------- JSON API


class SessionsAPI(SessionMixin, APIHandler):
    @web.authenticated
    async def get(self):
        everyone = self.get_argument("all", "") == "1" and self.requester.admin
        sessions = await asyncio.to_thread(debug.list_sessions, self.platform, self.requester, everyone)
        self.write_json({"sessions": sessions})

    @web.authenticated
    async def post(self):
        self.write_json(await self.create(self.json_body()), status=201)


class SessionAPI(SessionMixin, APIHandler):
    @web.authenticated
    async def get(self, session_id):
        self.write_json(await self.session_or_404(session_id))

    @web.authenticated
    async def delete(self, session_id):
        await self.session_or_404(session_id)
        await self.delete_ended([session_id])
        self.set_status(204)
        self.finish()


class TerminateAPI(SessionMixin, APIHandler):
    @web.authenticated
    async def post(self, session_id):
        await self.session_or_404(session_id)
        self.write_json(await debug.terminate_session(self.platform, session_id))


class SnapshotAPI(SessionMixin, APIHandler):
    @web.authenticated
    async def post(self, session_id):
        self.write_json(await self.snapshot(session_id, self.json_body()), status=202)


class DeleteAPI(SessionMixin, APIHandler):
    @web.authenticated
    async def post(self):
        self.write_json({"deleted": await self.delete_ended(self.json_body().get("ids"))})


class OpenSession(ProxyHandler, SessionMixin, BaseHandler):
    """The browser view ("open"): the session's JupyterLab, through this service, same login."""

    async def proxy_target(self) -> ProxyTarget:
        session_id = self.path_kwargs["session_id"]
        await self.session_or_404(session_id)
        found = await asyncio.to_thread(debug.proxy_target, self.platform, session_id)
        if found is None:
            raise web.HTTPError(404, "The session is not running")
        return ProxyTarget(*found)


class OpenRedirect(BaseHandler):
    @web.authenticated
    def get(self, session_id):
        self.redirect(self.request.path + "/lab")


class FormOptionsAPI(APIHandler):
    """What the create form offers this user: images, capacity, quota, mappable roots."""

    @web.authenticated
    async def get(self):
        context = await asyncio.to_thread(workload_form_context, self.platform, self.requester, "debug", None)
        self.write_json({
            "images": [c.__dict__ for cs in context["image_groups"].values() for c in cs],
            "capacity": [c.__dict__ for c in context["capacity"]],
            "quota": context["limits"].__dict__,
            "roots": [r.__dict__ for r in context["roots"]],
            "max_ports": self.platform.debug.max_ports,
        })


SESSION = r"(?P<session_id>dbg-[0-9a-f]{8})"
default_handlers = [
    (r"debug", DebugPage),
    (r"debug/new", NewSessionPage),
    (r"debug/delete", DeleteAction),
    (rf"debug/{SESSION}/terminate", TerminateAction),
    (rf"debug/{SESSION}/snapshot", SnapshotAction),
    (rf"debug/{SESSION}/open", OpenRedirect),
    (rf"debug/{SESSION}/open/.*", OpenSession),
    (r"api/debug", SessionsAPI),
    (r"api/debug/options", FormOptionsAPI),
    (r"api/debug/delete", DeleteAPI),
    (rf"api/debug/{SESSION}", SessionAPI),
    (rf"api/debug/{SESSION}/terminate", TerminateAPI),
    (rf"api/debug/{SESSION}/snapshot", SnapshotAPI),
]
