"""Base handlers of the labdeck service: hub login (HubOAuth), pages in the hub's look, JSON.

Handlers stay thin, like JupyterHub's apihandlers: authenticate, look up (404 if missing or
not yours), validate, call a service function, write JSON or render.
"""

import json
from http.client import responses
from types import SimpleNamespace

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.log import app_log

from services import notifications
from services.errors import InUseError, OptionError
from services.identity import Requester

from .nav import nav_items


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    """Every page and API handler of the service."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def platform(self):
        return self.settings["platform"]

    async def prepare(self):
        # identify the user without blocking the event loop (the sync path waits on the hub)
        model = await self.hub_auth.get_user(self, sync=False)
        try:
            self._hub_auth_user_cache = self.check_hub_user(model) if model else None
        except UserNotAllowed:
            self._hub_auth_user_cache = None
            raise web.HTTPError(403, f"{model.get('name')} may not use labdeck") from None

    @property
    def requester(self) -> Requester:
        return Requester.from_hub_user(self.current_user)

    # ---- ownership ----

    def check_visible(self, owner: str, what: str = "object"):
        """404 unless the current user owns it or is an admin (never reveal that it exists)."""
        requester = self.requester
        if not (requester.admin or owner == requester.name):
            raise web.HTTPError(404, f"No such {what}")

    # ---- pages ----

    def flash(self, message: str, error: bool = False):
        """A one-time notice for the next page (signed cookie: it cannot be forged by a link)."""
        self.set_signed_cookie("labdeck-flash", json.dumps({"message": message, "error": error}),
                               path=self.settings["service_prefix"], httponly=True, expires_days=None)

    def pop_flash(self) -> dict | None:
        raw = self.get_signed_cookie("labdeck-flash", max_age_days=1)
        if raw is None:
            return None
        self.clear_cookie("labdeck-flash", path=self.settings["service_prefix"])
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def template_namespace(self) -> dict:
        hub = self.hub_auth.hub_prefix
        model = self.current_user
        user = None
        if model:
            user = SimpleNamespace(name=model["name"], admin=bool(model.get("admin")),
                                   json_escaped_name=json.dumps(model["name"])[1:-1])
        prefix = self.settings["service_prefix"]
        return dict(
            base_url=hub, prefix=hub, user=user, labdeck_url=prefix,
            labdeck_nav=nav_items(hub, prefix),
            labdeck_banners=self.banners(), labdeck_in_service=True, labdeck_here=self.request.uri,
            login_url=hub + "login", logout_url=hub + "logout",
            static_url=lambda path, include_version=True: f"{hub}static/{path}",
            version_hash="", services=[], parsed_scopes=set(), expanded_scopes=set(),
            no_spawner_check=True, announcement=None,
            xsrf=self.xsrf_token.decode("ascii"), xsrf_token=self.xsrf_token.decode("ascii"),
        )

    def banners(self) -> list[dict]:
        """The user's active banners (maintenance notices); a failure here never breaks a page."""
        model = self.current_user
        if not model:
            return []
        try:
            return notifications.banners_for(self.platform.db, model["name"])
        except Exception:
            app_log.warning("Could not read banners for %s", model["name"], exc_info=True)
            return []

    def render_page(self, template: str, status: int = 200, **ns):
        self.set_status(status)
        html = self.settings["jinja_env"].get_template(template).render(**{**self.template_namespace(), **ns})
        self.finish(html)

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or responses.get(status_code, "Error")
        if status_code >= 500 and not isinstance(exc, web.HTTPError):
            message = "Something went wrong on our side; the error is in the service log."
        try:
            self.render_page("error.html", status=status_code, status_code=status_code,
                             status_message=responses.get(status_code, "Error"), message=message,
                             extra_error_html="")
        except Exception:  # never a traceback in a page, even if the template fails
            self.finish(f"{status_code}: {responses.get(status_code, 'Error')}")

    def option_error(self, error: OptionError) -> web.HTTPError:
        return web.HTTPError(409 if isinstance(error, InUseError) else 400, str(error))


class APIHandler(BaseHandler):
    """JSON in, JSON out; errors as ``{"status": code, "message": "..."}``."""

    def get_login_url(self):
        raise web.HTTPError(403, "Sign in to the hub, or send a token in the Authorization header")

    def json_body(self) -> dict:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except (ValueError, UnicodeDecodeError):
            raise web.HTTPError(400, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The request body must be a JSON object")
        return body

    def write_json(self, obj, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(obj, default=str))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or responses.get(status_code, "Error")
        if status_code >= 500 and not isinstance(exc, web.HTTPError):
            message = "Something went wrong on our side; the error is in the service log."
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"status": status_code, "message": message}))
