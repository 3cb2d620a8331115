"""Account pages served by the hub: sign-up, change password, accounts admin.

Registered by ``LabdeckAuthenticator.get_handlers``; the hub adds its prefix
(/hub/signup, /hub/change-password, /hub/accounts). The logic is in
services/accounts.py; these handlers read the form, call it, and render.
"""

import asyncio
from urllib.parse import urlencode

from jupyterhub.handlers import BaseHandler
from jupyterhub.handlers.login import LoginHandler
from tornado import web

from services.errors import OptionError
from services.models import AccountStatus

SIGNED_UP_NOTICE = "Your account was created. Sign in with your e-mail or user name."


class AccountPage(BaseHandler):
    """Shared rendering: a form page, or the same form again with the error and HTTP 400."""

    template = ""

    @property
    def accounts(self):
        return self.authenticator.accounts

    def form(self, *names: str) -> dict[str, str]:
        """The named form fields (passwords are never stripped)."""
        return {name: self.get_body_argument(name, "", strip="password" not in name) for name in names}

    async def render_page(self, status: int = 200, error: OptionError | None = None, **ns):
        self.set_status(status)
        ns.setdefault("values", {})
        html = await self.render_template(
            self.template,
            error=error.message if error else "",
            error_field=error.field if error else "",
            authenticator=self.authenticator,
            **ns,
        )
        self.finish(html)


class LabdeckLoginHandler(LoginHandler):
    """The hub's sign-in page, with a notice after sign-up."""

    def render_template(self, name, **ns):
        if name == "login.html" and self.request.method == "GET" and self.get_query_argument("signed_up", ""):
            ns.setdefault("notice", SIGNED_UP_NOTICE)
        return super().render_template(name, **ns)


class SignupHandler(AccountPage):
    template = "signup.html"

    def refuse_when_closed(self):
        if self.authenticator.signup_mode == "closed":
            raise web.HTTPError(404, "Sign-up is closed on this site. Ask an administrator for an account.")

    async def get(self):
        self.refuse_when_closed()
        await self.render_page()

    async def post(self):
        self.refuse_when_closed()
        values = self.form("username", "email", "password", "password_confirm")
        approval = self.authenticator.signup_mode == "approval"
        status = AccountStatus.pending if approval else AccountStatus.active
        try:
            account = await asyncio.to_thread(
                self.accounts.create,
                values["username"],
                values["email"],
                values["password"],
                status,
                password_confirm=values["password_confirm"],
            )
        except OptionError as e:
            return await self.render_page(400, e, values=values)
        self.log.info("Account %s signed up (%s)", account.username, account.status)
        if approval:
            return await self.render_page(awaiting_approval=True, account=account)
        query = urlencode({"signed_up": 1, "username": account.username})
        self.redirect(f"{self.settings['login_url']}?{query}")


class ChangePasswordHandler(AccountPage):
    template = "change-password.html"

    @web.authenticated
    async def get(self):
        await self.render_page()

    @web.authenticated
    async def post(self):
        values = self.form("current_password", "password", "password_confirm")
        name = self.current_user.name
        try:
            await asyncio.to_thread(
                self.accounts.change_password,
                name,
                values["current_password"],
                values["password"],
                password_confirm=values["password_confirm"],
            )
        except OptionError as e:
            return await self.render_page(400, e)
        await self.authenticator.password_changed(name)
        self.log.info("User %s changed their password", name)
        await self.render_page(notice="Your password was changed.")


class AccountsAdminHandler(AccountPage):
    """Every account; approve or reject sign-ups; reset a password. Admins only."""

    template = "accounts.html"

    def require_admin(self):
        user = self.current_user
        if user is None or not user.admin:
            raise web.HTTPError(404)  # like the hub, do not reveal admin pages
        return user

    async def render_page(self, status: int = 200, error: OptionError | None = None, **ns):
        accounts = await asyncio.to_thread(self.accounts.all)
        await super().render_page(status, error, accounts=accounts, **ns)

    @web.authenticated
    async def get(self):
        self.require_admin()
        await self.render_page()

    @web.authenticated
    async def post(self):
        admin = self.require_admin()
        values = self.form("action", "username", "password")
        username, action = values["username"], values["action"]
        actions = {
            "approve": (self.accounts.approve, admin.name, "Approved {}: they can sign in now."),
            "reject": (self.accounts.reject, admin.name, "Rejected {}: they cannot sign in."),
            "reset": (
                self.accounts.set_password,
                values["password"],
                "Set a new password for {}. Ask them to change it after signing in.",
            ),
        }
        try:
            if action not in actions:
                raise OptionError("action", "Choose approve, reject or reset.")
            change, argument, notice = actions[action]
            account = await asyncio.to_thread(change, username, argument)
        except OptionError as e:
            return await self.render_page(400, e, values={"username": username})
        if action == "reset":
            await self.authenticator.password_changed(account.username)
        self.log.info("Admin %s: %s %s", admin.name, action, account.username)
        await self.render_page(notice=notice.format(account.username))


default_handlers = [
    (r"/login", LabdeckLoginHandler),
    (r"/signup", SignupHandler),
    (r"/change-password", ChangePasswordHandler),
    (r"/accounts", AccountsAdminHandler),
]
