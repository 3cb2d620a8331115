"""Names derived from user input, safe for Docker, DNS and file systems."""

import secrets
import string

from escapism import escape

_SAFE = set(string.ascii_lowercase + string.digits)


def escape_name(text: str) -> str:
    """Escape a user or server name into ``[a-z0-9-]`` without collisions.

    Same scheme as DockerSpawner's default: every other character, '-' included,
    becomes ``-XX`` (hex), so distinct names never map to the same string.
    """
    return escape(text, _SAFE, escape_char="-").lower()


def new_workload_id(kind_prefix: str) -> str:
    """A short, unguessable task ID such as ``nb-3f9a1c2e``."""
    return f"{kind_prefix}-{secrets.token_hex(4)}"
