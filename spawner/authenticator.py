"""labdeck's own JupyterHub authenticator: accounts in the platform database.

Sign-in takes an e-mail address or a user name and a password; repeated failures
are slowed down; sign-up is open, admin-approved or closed by config. The pages
(sign-up, change password, accounts admin) are in handlers/accounts.py.
"""

import asyncio
import math
import os
import secrets
import weakref
from pathlib import Path

from jupyterhub.auth import Authenticator
from tornado import web
from traitlets import CaselessStrEnum, Float, Integer, Unicode, default

from services.accounts import AccountStore, LoginThrottle
from services.errors import OptionError
from services.models import AccountStatus
from services.platform import get_platform

LOGIN_KEY_MAX = 320  # longest login remembered by the throttle (the longest e-mail address)


class LabdeckAuthenticator(Authenticator):
    """Passwords (argon2id) for accounts that sign up on the hub's own pages."""

    signup_mode = CaselessStrEnum(
        ["open", "approval", "closed"],
        default_value="open",
        help="""Who may create an account on /hub/signup.

        - open: anyone; the account can sign in at once.
        - approval: anyone may sign up, but an admin must approve the account on
          /hub/accounts before it can sign in.
        - closed: no sign-up page; admins reset passwords of existing accounts.
        """,
    ).tag(config=True)

    min_password_length = Integer(
        8, help="Shortest password accepted at sign-up and password change."
    ).tag(config=True)

    throttle_free_attempts = Integer(
        5,
        help="""Failed sign-ins for one account (or login) within throttle_window_seconds
        before each further attempt must wait.""",
    ).tag(config=True)

    throttle_ip_free_attempts = Integer(
        50,
        help="""Failed sign-ins from one client IP within throttle_window_seconds before
        each further attempt from it must wait. Higher than the per-account limit because
        many people may share one address (a lab behind NAT).""",
    ).tag(config=True)

    throttle_window_seconds = Float(
        15 * 60, help="How long a failed sign-in counts against its account and IP."
    ).tag(config=True)

    throttle_base_delay_seconds = Float(
        2.0, help="Wait imposed after the free attempts are used up; doubles with every further failure."
    ).tag(config=True)

    throttle_max_delay_seconds = Float(
        5 * 60, help="Longest wait between two sign-in attempts for one account or IP."
    ).tag(config=True)

    initial_admin_email_domain = Unicode(
        "labdeck.local",
        help="""Domain of the e-mail address given to admin accounts created at start-up
        (admin ``admin`` gets ``admin@labdeck.local``).""",
    ).tag(config=True)

    initial_admin_password_file = Unicode(
        help="""File holding the password of admin accounts created at start-up.

        Written with a random password (mode 600) when an account in admin_users is
        missing and the file does not exist; deleted once no admin uses that password
        any more. Default: <Platform.data_dir>/initial-admin-password.""",
    ).tag(config=True)

    @default("initial_admin_password_file")
    def _default_initial_admin_password_file(self):
        return str(Path(self.platform.data_dir) / "initial-admin-password")

    @default("any_allow_config")
    def _default_any_allow_config(self):
        # check_allowed admits active accounts, so there is always allow config
        return True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.platform = get_platform(self.config, self.log)
        self.accounts = AccountStore(self.platform.db, min_password_length=self.min_password_length)
        throttle = dict(
            window=self.throttle_window_seconds,
            base_delay=self.throttle_base_delay_seconds,
            max_delay=self.throttle_max_delay_seconds,
        )
        self.login_throttle = LoginThrottle(free_attempts=self.throttle_free_attempts, **throttle)
        self.ip_throttle = LoginThrottle(free_attempts=self.throttle_ip_free_attempts, **throttle)
        # one password check at a time per login, so parallel requests cannot outrun the throttle
        self._login_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._ensure_admin_accounts()

    # ---- first admins ----

    def _ensure_admin_accounts(self):
        missing = sorted(name for name in self.admin_users if self.accounts.get(name) is None)
        if not missing:
            return
        password = self._initial_admin_password()
        for name in missing:
            email = f"{name}@{self.initial_admin_email_domain}"
            try:
                self.accounts.create(name, email, password)
            except OptionError as e:
                raise ValueError(
                    f"Cannot create the account of admin {name!r} ({email}): {e}. "
                    f"Check c.Authenticator.admin_users and {self.initial_admin_password_file}."
                ) from None
            self.log.info(
                "Created admin account %r (%s); its password is in %s",
                name,
                email,
                self.initial_admin_password_file,
            )

    def _initial_admin_password(self) -> str:
        path = Path(self.initial_admin_password_file)
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(max(12, self.min_password_length))
        path.parent.mkdir(parents=True, exist_ok=True)
        # created with mode 600 from the start: the password is never readable by others
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password

    async def password_changed(self, username: str):
        """Call after ``username``'s password changed: forgets the initial admin password
        once no admin uses it, so the run command stops printing it."""
        path = Path(self.initial_admin_password_file)
        if username not in self.admin_users or not path.exists():
            return
        initial = path.read_text().strip()

        def still_used():
            return any(self.accounts.verify(name, initial) for name in sorted(self.admin_users))

        if not await asyncio.to_thread(still_used):
            path.unlink(missing_ok=True)
            self.log.info("Deleted %s: no admin uses the initial password any more", path)

    # ---- sign-in ----

    async def authenticate(self, handler, data):
        login = (data.get("username") or "").strip()
        password = data.get("password") or ""
        if not login or not password:
            return None
        account = self.accounts.find_by_login(login)
        # e-mail and user name of one account share one throttle key
        key = account.username if account else login.lower()[:LOGIN_KEY_MAX]
        ip = handler.request.remote_ip if handler is not None else ""
        lock = self._login_locks.setdefault(key, asyncio.Lock())
        async with lock:
            self._refuse_if_throttled(key, ip)
            account = await asyncio.to_thread(self.accounts.verify, login, password)
            if account is None:
                self.login_throttle.failure(key)
                if ip:
                    self.ip_throttle.failure(ip)
                return None
            self.login_throttle.success(key)
        if account.status == AccountStatus.pending.value:
            raise web.HTTPError(403, "Your account is waiting for an administrator's approval.")
        if account.status != AccountStatus.active.value:
            raise web.HTTPError(
                403, "Your account was not approved. Ask an administrator if this is a mistake."
            )
        return {"name": account.username}

    def _refuse_if_throttled(self, key: str, ip: str):
        wait = self.login_throttle.retry_after(key)
        if ip:
            wait = max(wait, self.ip_throttle.retry_after(ip))
        if wait > 0:
            seconds = math.ceil(wait)
            error = web.HTTPError(429, f"Too many failed sign-ins. Try again in {seconds} seconds.")
            error.headers = {"Retry-After": str(seconds)}  # the hub copies these into the response
            raise error

    def check_allowed(self, username, authentication=None):
        account = self.accounts.get(username)
        if account is None or account.status != AccountStatus.active.value:
            return False
        if self.allowed_users:
            return username in self.allowed_users or username in self.admin_users
        return True

    async def refresh_user(self, user, handler=None):
        # a deleted or rejected account must sign in again (and then cannot)
        account = self.accounts.get(user.name)
        return account is not None and account.status == AccountStatus.active.value

    def delete_user(self, user):
        super().delete_user(user)
        self.accounts.delete(user.name)

    def get_handlers(self, app):
        from handlers.accounts import default_handlers  # the web layer, loaded only in the hub

        return list(default_handlers)
