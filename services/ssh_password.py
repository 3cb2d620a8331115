"""Passwords of remote-debug sessions: the rule they must meet and the hash the container gets.

The clear password never leaves the service's memory: the debug image's entrypoint receives a
crypt(3) hash (LABDECK_PASSWORD_HASH) and writes it to /etc/shadow, where sshd checks logins.
The scheme is bcrypt (``$2b$``), which Debian 12's libxcrypt checks and the maintained ``bcrypt``
package makes (the standard library's ``crypt`` module is gone in Python 3.13). bcrypt reads only
the first 72 bytes of a password, so longer ones are refused rather than silently cut.
"""

import unicodedata

import bcrypt

from .errors import OptionError

FIELD = "password"
MIN_CHARACTERS = 8
MAX_BYTES = 72  # bcrypt's limit, in UTF-8
ROUNDS = 12  # bcrypt cost: 2**12 rounds, about a quarter of a second per check


def check_password(password) -> None:
    """Refuse a password sshd could not take as typed, naming the rule (never the password)."""
    if not isinstance(password, str) or not password:
        raise OptionError(FIELD, "is required")
    if len(password) < MIN_CHARACTERS:
        raise OptionError(FIELD, f"must be at least {MIN_CHARACTERS} characters long")
    # Cc: ASCII and Latin-1 controls (tab, newline, NUL, DEL...); Cs: halves of a character, not text.
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in password):
        raise OptionError(FIELD, "must not contain control characters such as tabs or line breaks")
    size = len(password.encode())
    if size > MAX_BYTES:
        raise OptionError(
            FIELD, f"must be at most {MAX_BYTES} bytes in UTF-8 (this one has {size}); "
                   "letters outside ASCII take 2-4 bytes each")


def crypt_hash(password: str, *, rounds: int = ROUNDS) -> str:
    """A salted crypt(3) hash of a password that meets the rule, for LABDECK_PASSWORD_HASH."""
    check_password(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds, prefix=b"2b")).decode()


def verify(password: str, password_hash: str) -> bool:
    """Whether the password matches a hash from :func:`crypt_hash`; False for anything malformed."""
    try:
        check_password(password)
        return bcrypt.checkpw(password.encode(), password_hash.encode("ascii"))
    except (OptionError, ValueError, AttributeError):  # UnicodeEncodeError is a ValueError
        return False
