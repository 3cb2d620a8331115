"""``python -m services.migrations new "message"``: write the next migration.

It upgrades a throw-away SQLite database to head and lets Alembic's autogenerate
compare it with services/models.py; read and fix the file it writes before committing.
"""

import sys
import tempfile
from pathlib import Path

from alembic import command

from ..db import Database
from . import alembic_config, next_revision_id


def new(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'head.sqlite'}")
        db.upgrade()
        with db.engine.begin() as conn:
            command.revision(
                alembic_config(conn), message=message, autogenerate=True, rev_id=next_revision_id(message)
            )
        db.dispose()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "new":
        print('usage: python -m services.migrations new "what changed"', file=sys.stderr)
        return 2
    new(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
