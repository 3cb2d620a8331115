"""The labdeck service's tornado application: routes of every module under the service prefix."""

import os
import secrets
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape
from jupyterhub._data import DATA_FILES_PATH
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from tornado import web

from . import admin, caches, centre, debug, home, images, jobs

HERE = Path(__file__).resolve().parent
# every module of the service; each ends with its `default_handlers` route list
MODULES = (home, debug, jobs, caches, images, centre, admin)


def hub_templates_dir() -> str:
    """The hub's own templates (page.html), so service pages extend the same frame."""
    return os.path.join(DATA_FILES_PATH, "templates")


def jinja_env() -> Environment:
    hub = hub_templates_dir()
    loader = ChoiceLoader([
        PrefixLoader({"templates": FileSystemLoader([hub])}, "/"),
        FileSystemLoader([str(HERE / "templates"), hub]),
    ])
    return Environment(loader=loader, autoescape=select_autoescape(default=True, default_for_string=True))


def cookie_secret(data_dir: str) -> bytes:
    """Kept across restarts so a service restart does not sign everyone out."""
    path = Path(data_dir) / "labdeck-service-cookie-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


class OAuthCallback(HubOAuthCallbackHandler):
    """The hub's OAuth callback, with the application's HubOAuth (it holds the PKCE state)."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]


def routes(prefix: str) -> list:
    out = [(prefix + "oauth_callback", OAuthCallback),
           (prefix + r"static/(.*)", web.StaticFileHandler, {"path": str(HERE / "static")})]
    for module in MODULES:
        for route in module.default_handlers:
            out.append((prefix + route[0].lstrip("/"), *route[1:]))
    return out


def make_app(platform, hub_auth: HubOAuth | None = None, **settings) -> web.Application:
    hub_auth = hub_auth or HubOAuth(cache_max_age=60)
    prefix = hub_auth.base_url  # the service prefix, e.g. /services/labdeck/
    return web.Application(
        routes(prefix),
        platform=platform,
        hub_auth=hub_auth,
        service_prefix=prefix,
        jinja_env=jinja_env(),
        cookie_secret=cookie_secret(platform.data_dir),
        # XSRF is checked by HubOAuth when it authenticates a request by cookie (an unsafe
        # request without a valid token is not signed in); token-authenticated API calls are
        # exempt. Tornado's own check would run before we know which of the two it is.
        xsrf_cookies=False,
        login_url=hub_auth.login_url,
        **settings,
    )
