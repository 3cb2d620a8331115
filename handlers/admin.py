"""Administration (admins only; everyone else gets 404): maintained hosts, and notifying the
users of a host before maintenance."""

import asyncio

from tornado import web

from services import hosts, maintenance
from services.errors import OptionError

from .base import APIHandler, BaseHandler

HOST_FORM_FIELDS = ("name", "region", "docker_url", "tls_ca", "tls_cert", "tls_key", "address", "gpus")
WINDOW_FIELDS = ("host", "starts_at", "ends_at", "message")


class AdminMixin:
    def require_admin(self):
        if not self.requester.admin:
            raise web.HTTPError(404)  # an admin page does not exist for anyone else

    async def add_host(self, raw: dict) -> dict:
        try:
            return await asyncio.to_thread(hosts.add_host, self.platform, self.requester.name, raw)
        except OptionError as e:
            raise self.option_error(e) from None

    async def host_action(self, name: str, action: str) -> None:
        try:
            if action in ("drain", "undrain"):
                await asyncio.to_thread(hosts.set_drained, self.platform, name, action == "drain")
                if action == "undrain":
                    await self.platform.job_queue.run()  # queued jobs may fit there now
            elif action == "remove":
                await asyncio.to_thread(hosts.remove_host, self.platform, name)
        except LookupError:
            raise web.HTTPError(404, "No such host") from None
        except OptionError as e:
            raise self.option_error(e) from None

    async def query(self, target: str) -> tuple[list, list[dict]]:
        try:
            found = await asyncio.to_thread(maintenance.resolve_hosts, self.platform, target)
        except OptionError as e:
            raise self.option_error(e) from None
        return found, await asyncio.to_thread(maintenance.workloads_on, self.platform, found)

    async def schedule(self, raw: dict) -> dict:
        try:
            result = await asyncio.to_thread(maintenance.schedule, self.platform, self.requester.name, raw)
        except OptionError as e:
            raise self.option_error(e) from None
        mails = result.pop("mails")
        if self.platform.mailer.enabled and mails:
            self.platform.spawn_background(self._send(mails, [w["id"] for w in result["windows"]]))
        result["emails_queued"] = len(mails) if self.platform.mailer.enabled else 0
        return result

    async def _send(self, mails, window_ids):
        try:
            sent, error = await asyncio.to_thread(self.platform.mailer.send, mails), None
        except Exception as e:  # the notices in the platform stand; the window records why mail failed
            sent, error = 0, f"{type(e).__name__}: {e}"
            self.platform.log.warning("Maintenance e-mails failed: %s", error)
        await asyncio.to_thread(maintenance.record_mail_result, self.platform, window_ids, sent, error)


# ---------------------------------------------------------------- pages


class HostsPage(AdminMixin, BaseHandler):
    async def page(self, values=None, error="", status=200):
        rows = await asyncio.to_thread(hosts.host_rows, self.platform)
        self.render_page("admin-hosts.html", status=status, page_title="Hosts", active_module="admin",
                         hosts=rows, regions=self.platform.resources.regions(), values=values or {},
                         error=error, notice=self.pop_flash())

    @web.authenticated
    async def get(self):
        self.require_admin()
        await self.page()

    @web.authenticated
    async def post(self):
        """The add-host form: probed before it is saved; a refusal comes back on the form."""
        self.require_admin()
        raw = {k: self.get_body_argument(k, "") for k in HOST_FORM_FIELDS}
        try:
            added = await self.add_host(raw)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            return await self.page(values=raw, error=e.log_message, status=400)
        self.flash(f"Added host {added['name']} ({added['engine']}: {added['cpus']:g} cores, "
                   f"{added['memory_mb'] / 1024:.1f} GB); it takes workloads now.")
        self.redirect(self.settings["service_prefix"] + "admin/hosts")


class HostActionPage(AdminMixin, BaseHandler):
    @web.authenticated
    async def post(self, name, action):
        self.require_admin()
        try:
            await self.host_action(name, action)
            done = {"drain": "is draining: no new workloads; running ones continue",
                    "undrain": "takes new workloads again", "remove": "was removed"}[action]
            self.flash(f"Host {name} {done}.")
        except web.HTTPError as e:
            if e.status_code not in (400, 409):
                raise
            self.flash(e.log_message, error=True)
        self.redirect(self.settings["service_prefix"] + "admin/hosts")


class RefreshPage(AdminMixin, BaseHandler):
    @web.authenticated
    async def post(self):
        self.require_admin()
        results = await asyncio.to_thread(hosts.refresh, self.platform)
        down = [r["name"] for r in results if not r["reachable"]]
        self.flash(f"Probed {len(results)} hosts" + (f"; not answering: {', '.join(down)}." if down else "; all answer."),
                   error=bool(down))
        self.redirect(self.settings["service_prefix"] + "admin/hosts")


class NotifyPage(AdminMixin, BaseHandler):
    async def page(self, values: dict, error: str = "", status: int = 200, result=None):
        found, rows = [], None
        if values.get("host") and not error:
            try:
                found, rows = await self.query(values["host"])
            except web.HTTPError as e:
                error, status = e.log_message, 400
        self.render_page("admin-notify.html", status=status, page_title="Notify users", active_module="admin",
                         hosts=self.platform.resources.all_hosts(), values=values, error=error, found=found,
                         rows=rows, result=result, notice=self.pop_flash(),
                         windows=await asyncio.to_thread(maintenance.windows, self.platform),
                         mail_enabled=self.platform.mailer.enabled)

    @web.authenticated
    async def get(self):
        self.require_admin()
        await self.page({"host": self.get_argument("host", "")})

    @web.authenticated
    async def post(self):
        self.require_admin()
        raw = {k: self.get_body_argument(k, "") for k in WINDOW_FIELDS}
        try:
            result = await self.schedule(raw)
        except web.HTTPError as e:
            if e.status_code != 400:
                raise
            return await self.page(raw, error=e.log_message, status=400)
        users = len(result["users"])
        mails = f"; {result['emails_queued']} e-mails are on their way" if result["emails_queued"] else ""
        self.flash(f"Maintenance scheduled on {', '.join(w['host'] for w in result['windows'])}; "
                   f"{users} user{'s' if users != 1 else ''} notified{mails}.")
        self.redirect(self.settings["service_prefix"] + f"admin/notify?host={raw['host']}")


# ---------------------------------------------------------------- JSON API


class HostsAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        self.write_json({"hosts": await asyncio.to_thread(hosts.host_rows, self.platform)})

    @web.authenticated
    async def post(self):
        self.require_admin()
        added = await self.add_host(self.json_body())
        rows = await asyncio.to_thread(hosts.host_rows, self.platform)
        self.write_json(next(r for r in rows if r["name"] == added["name"]), status=201)


class RefreshAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def post(self):
        self.require_admin()
        await asyncio.to_thread(hosts.refresh, self.platform)
        self.write_json({"hosts": await asyncio.to_thread(hosts.host_rows, self.platform)})


class HostAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def delete(self, name):
        self.require_admin()
        await self.host_action(name, "remove")
        self.set_status(204)
        self.finish()


class HostActionAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def post(self, name, action):
        self.require_admin()
        await self.host_action(name, action)
        rows = await asyncio.to_thread(hosts.host_rows, self.platform)
        self.write_json(next(r for r in rows if r["name"] == name))


class HostWorkloadsAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        found, rows = await self.query(self.get_argument("host", ""))
        self.write_json({"hosts": [h.name for h in found], "workloads": rows})


class MaintenanceAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def get(self):
        self.require_admin()
        past = self.get_argument("past", "") == "1"
        self.write_json({"windows": await asyncio.to_thread(maintenance.windows, self.platform, past)})

    @web.authenticated
    async def post(self):
        self.require_admin()
        self.write_json(await self.schedule(self.json_body()), status=201)


class WindowAPI(AdminMixin, APIHandler):
    @web.authenticated
    async def delete(self, window_id):
        self.require_admin()
        try:
            await asyncio.to_thread(maintenance.cancel, self.platform, int(window_id))
        except LookupError:
            raise web.HTTPError(404, "No such maintenance window") from None
        self.set_status(204)
        self.finish()


class CancelWindowPage(AdminMixin, BaseHandler):
    @web.authenticated
    async def post(self, window_id):
        self.require_admin()
        try:
            view = await asyncio.to_thread(maintenance.cancel, self.platform, int(window_id))
            self.flash(f"Maintenance on {view['host']} was called off; its banners are gone.")
        except LookupError:
            raise web.HTTPError(404, "No such maintenance window") from None
        self.redirect(self.settings["service_prefix"] + "admin/notify")


HOST = r"(?P<name>[a-z0-9][a-z0-9-]{0,62})"
default_handlers = [
    (r"admin/hosts", HostsPage),
    (r"admin/hosts/refresh", RefreshPage),
    (rf"admin/hosts/{HOST}/(?P<action>drain|undrain|remove)", HostActionPage),
    (r"admin/notify", NotifyPage),
    (r"admin/maintenance/(?P<window_id>[0-9]{1,12})/cancel", CancelWindowPage),
    (r"api/admin/hosts", HostsAPI),
    (r"api/admin/hosts/refresh", RefreshAPI),
    (r"api/admin/hosts/workloads", HostWorkloadsAPI),
    (rf"api/admin/hosts/{HOST}", HostAPI),
    (rf"api/admin/hosts/{HOST}/(?P<action>drain|undrain)", HostActionAPI),
    (r"api/admin/maintenance", MaintenanceAPI),
    (r"api/admin/maintenance/(?P<window_id>[0-9]{1,12})", WindowAPI),
]
