"""Keep the hub's database layer out of the single-user server's start-up.

`jupyterhub-singleuser` imports jupyterhub.log, .scopes and .utils, which import SQLAlchemy,
Alembic and the hub's ORM at module level, though only the hub itself ever uses them. That
was 0.4 s of CPU in every server start here (python -X importtime; see the closing note of
the performance issue). Run at image build time against the pinned jupyterhub: each edit
must match exactly once, so an upgrade that changes these lines fails the build instead of
silently not applying.
"""

import py_compile
import sys
from pathlib import Path

import jupyterhub

ON_FIRST_USE = '''

class _ImportedOnFirstUse:
    """labdeck: a module imported when first used (only the hub uses these)."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        return getattr(importlib.import_module(self._name), attr)


sa = _ImportedOnFirstUse("sqlalchemy")
orm = _ImportedOnFirstUse("jupyterhub.orm")
roles = _ImportedOnFirstUse("jupyterhub.roles")
'''

LOADED_BY_HUB = '''import sys as _sys


def _hub_module(name):
    """labdeck: a hub module if this process (the hub) has loaded it, else None."""
    return _sys.modules.get("jupyterhub." + name)
'''

EDITS = {
    # log_request: the health-check test and the request metrics are the hub's
    "log.py": [
        ("from .handlers.pages import HealthCheckHandler\nfrom .metrics import prometheus_log_method\n",
         LOADED_BY_HUB),
        ("isinstance(handler, StaticFileHandler | HealthCheckHandler)",
         "(isinstance(handler, StaticFileHandler) or ((pages := _hub_module('handlers.pages')) is not None"
         " and isinstance(handler, pages.HealthCheckHandler)))"),
        ("    prometheus_log_method(handler)\n",
         "    if (metrics := _hub_module('metrics')) is not None:\n        metrics.prometheus_log_method(handler)\n"),
    ],
    # scopes: the server needs only the pure scope functions; the ORM is used inside functions
    "scopes.py": [
        ("import sqlalchemy as sa\n", ""),
        ("from . import orm, roles\n", ON_FIRST_USE),
    ],
    # utils.catch_db_error: a database error can only come from an already loaded SQLAlchemy
    "utils.py": [
        ("from sqlalchemy.exc import SQLAlchemyError\n", "import sys as _sys\n"),
        ("        except SQLAlchemyError:\n",
         "        except Exception as e:\n"
         "            sa_exc = _sys.modules.get('sqlalchemy.exc')\n"
         "            if sa_exc is None or not isinstance(e, sa_exc.SQLAlchemyError):\n"
         "                raise\n"),
    ],
}


def main() -> int:
    package = Path(jupyterhub.__file__).parent
    for name, edits in EDITS.items():
        path = package / name
        text = path.read_text()
        for old, new in edits:
            if text.count(old) != 1:
                print(f"{path}: expected exactly one {old!r}; was jupyterhub upgraded?", file=sys.stderr)
                return 1
            text = text.replace(old, new)
        path.write_text(text)
        py_compile.compile(str(path), doraise=True)
    # the proof: the server's imports no longer load the database layer
    import subprocess

    probe = "import sys, jupyterhub.singleuser; print(sorted(m for m in ('sqlalchemy', 'alembic', 'jupyterhub.orm') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    if loaded != "[]":
        print(f"jupyterhub.singleuser still imports {loaded}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
