"""Accounts: who may sign in, with which password, and how fast they may guess.

No HTTP here. The hub's authenticator (spawner/authenticator.py) and the account
pages (handlers/accounts.py) call :class:`AccountStore` and :class:`LoginThrottle`.

Passwords are stored only as argon2id hashes (argon2-cffi). Hashing costs tens of
milliseconds of CPU on purpose, so callers on an event loop run :meth:`AccountStore.verify`,
:meth:`AccountStore.create` and the password changes in a thread.
"""

import re
import threading
import time
from collections import deque
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .errors import OptionError
from .models import Account, AccountStatus, utcnow

USERNAME_MAX = 32
USERNAME_RULE = (
    f"must be 1–{USERNAME_MAX} characters: lowercase letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)
_USERNAME_RE = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{USERNAME_MAX - 1}}}")
EMAIL_MAX = 254
# plausible, not RFC 5322: one @, no spaces, a dot in the domain
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
PASSWORD_MAX = 1024  # bounds the work an anonymous request can cause


def normalize_username(username: str) -> str:
    """User names are lower case; sign-in and sign-up accept any case."""
    return (username or "").strip().lower()


def normalize_email(email: str) -> str:
    """E-mail addresses are compared and stored in lower case."""
    return (email or "").strip().lower()


def check_username(username: str) -> str:
    name = normalize_username(username)
    if not _USERNAME_RE.fullmatch(name):
        raise OptionError("username", f"The user name {USERNAME_RULE}.")
    return name


def check_email(email: str) -> str:
    address = normalize_email(email)
    if len(address) > EMAIL_MAX or not _EMAIL_RE.fullmatch(address):
        raise OptionError(
            "email", f"Enter an e-mail address like name@example.org (at most {EMAIL_MAX} characters)."
        )
    return address


def check_confirmation(password: str, confirm: str, field: str = "password_confirm"):
    """A form's second copy of a new password must match the first."""
    if password != confirm:
        raise OptionError(field, "The two passwords do not match.")


def _by_name(username: str):
    return select(Account).where(Account.username == normalize_username(username))


class AccountStore:
    """Accounts in the platform database (table ``accounts``)."""

    def __init__(self, db, min_password_length: int = 8, hasher: PasswordHasher | None = None):
        self.db = db
        self.min_password_length = min_password_length
        self.hasher = hasher or PasswordHasher()  # argon2id with the library's current parameters
        self._dummy_hash = None

    # ---- validation ----

    def check_password(self, password: str, username: str = "", email: str = "", field="password"):
        """Refuse a new password that is too short, too long or equal to the name or e-mail."""
        password = password or ""
        if len(password) < self.min_password_length:
            raise OptionError(
                field, f"The password must be at least {self.min_password_length} characters long."
            )
        if len(password) > PASSWORD_MAX:
            raise OptionError(field, f"The password must be at most {PASSWORD_MAX} characters long.")
        if password.lower() in {normalize_username(username), normalize_email(email)}:
            raise OptionError(field, "The password must not be your user name or e-mail address.")

    # ---- queries ----

    def get(self, username: str) -> Account | None:
        with self.db.session() as s:
            return s.scalar(_by_name(username))

    def find_by_login(self, login: str) -> Account | None:
        """The account whose e-mail (when ``login`` has an @) or user name is ``login``, any case."""
        login = (login or "").strip().lower()
        if not login:
            return None
        column = Account.email if "@" in login else Account.username  # both stored in lower case
        with self.db.session() as s:
            return s.scalar(select(Account).where(column == login))

    def all(self) -> list[Account]:
        with self.db.session() as s:
            return list(s.scalars(select(Account).order_by(Account.created_at, Account.id)))

    def pending(self) -> list[Account]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Account)
                    .where(Account.status == AccountStatus.pending.value)
                    .order_by(Account.created_at, Account.id)
                )
            )

    # ---- changes ----

    def create(
        self,
        username: str,
        email: str,
        password: str,
        status=AccountStatus.active,
        *,
        password_confirm: str | None = None,
    ) -> Account:
        """Validate and store a new account. Raises OptionError naming the field.

        ``password_confirm`` (the form's second copy) is checked when given.
        """
        username = check_username(username)
        email = check_email(email)
        self.check_password(password, username, email)
        if password_confirm is not None:
            check_confirmation(password, password_confirm)
        status = AccountStatus(status)
        self._refuse_taken(username, email)
        account = Account(
            username=username,
            email=email,
            password_hash=self.hasher.hash(password),
            status=status.value,
        )
        try:
            with self.db.session() as s:
                s.add(account)
        except IntegrityError:
            # another request took the name or address between the check and the insert
            self._refuse_taken(username, email)
            raise
        return account

    def _refuse_taken(self, username: str, email: str):
        if self.get(username) is not None:
            raise OptionError("username", f"The user name '{username}' is already taken.")
        if self.find_by_login(email) is not None:
            raise OptionError("email", "An account with this e-mail address already exists.")

    def verify(self, login: str, password: str) -> Account | None:
        """The account ``login`` names if ``password`` is its password, whatever its status.

        Upgrades the stored hash when the hasher's parameters have changed.
        """
        account = self.find_by_login(login)
        if account is None:
            # spend the same time as a real check, so timing does not reveal who exists
            self._verify_hash(self._dummy(), password)
            return None
        if not self._verify_hash(account.password_hash, password):
            return None
        if self.hasher.check_needs_rehash(account.password_hash):
            account = self._store_hash(account.username, password, changed=False)
        return account

    def change_password(
        self,
        username: str,
        old_password: str,
        new_password: str,
        *,
        password_confirm: str | None = None,
    ) -> Account:
        """A user changes their own password; the current one must be right."""
        account = self._require(username)
        if not self._verify_hash(account.password_hash, old_password):
            raise OptionError("current_password", "The current password is not correct.")
        self.check_password(new_password, account.username, account.email)
        if password_confirm is not None:
            check_confirmation(new_password, password_confirm)
        return self._store_hash(account.username, new_password)

    def set_password(self, username: str, new_password: str) -> Account:
        """An administrator sets a new password (reset)."""
        account = self._require(username)
        self.check_password(new_password, account.username, account.email)
        return self._store_hash(account.username, new_password)

    def approve(self, username: str, by: str) -> Account:
        return self._set_status(username, AccountStatus.active, by)

    def reject(self, username: str, by: str) -> Account:
        return self._set_status(username, AccountStatus.rejected, by)

    def delete(self, username: str) -> bool:
        """Remove the account; False when there was none."""
        with self.db.session() as s:
            account = s.scalar(_by_name(username))
            if account is None:
                return False
            s.delete(account)
        return True

    # ---- helpers ----

    def _require(self, username: str, session=None) -> Account:
        account = session.scalar(_by_name(username)) if session else self.get(username)
        if account is None:
            raise OptionError("username", f"There is no account named '{normalize_username(username)}'.")
        return account

    def _set_status(self, username: str, status: AccountStatus, by: str) -> Account:
        with self.db.session() as s:
            account = self._require(username, s)
            account.status = status.value
            account.approved_by = by
        return account

    def _store_hash(self, username: str, password: str, changed: bool = True) -> Account:
        password_hash = self.hasher.hash(password)
        with self.db.session() as s:
            account = self._require(username, s)
            account.password_hash = password_hash
            if changed:
                account.password_changed_at = utcnow()
        return account

    def _verify_hash(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash("labdeck: no such account")
        return self._dummy_hash


class LoginThrottle:
    """Slows down password guessing for one kind of key (a login, or a client IP).

    The first ``free_attempts`` failures within ``window`` seconds cost nothing.
    After that, each further attempt must wait ``base_delay`` seconds after the last
    failure, doubling with every further failure, at most ``max_delay``. A failure is
    forgotten ``window`` seconds after it happened; a success forgets the key.
    """

    def __init__(
        self,
        free_attempts: int = 5,
        window: float = 15 * 60,
        base_delay: float = 2.0,
        max_delay: float = 5 * 60,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free_attempts = free_attempts
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_prune = clock() + window

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may try now."""
        with self._lock:
            now = self.clock()
            failures = self._recent(key, now)
            extra = len(failures) - self.free_attempts
            if extra < 0:
                return 0
            delay = min(self.max_delay, self.base_delay * 2**extra)
            return max(0.0, failures[-1] + delay - now)

    def failure(self, key: str):
        with self._lock:
            now = self.clock()
            self._failures.setdefault(key, deque()).append(now)
            self._prune(now)

    def success(self, key: str):
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque:
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures

    def _prune(self, now: float):
        # forget keys whose failures all expired, so guessing many names cannot grow memory forever
        if now < self._next_prune:
            return
        self._next_prune = now + self.window
        for key in list(self._failures):
            self._recent(key, now)
