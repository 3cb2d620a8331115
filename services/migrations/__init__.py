"""Schema migrations of the platform database (Alembic, configured in code: no alembic.ini).

:meth:`services.db.Database.upgrade` is the way in; ``python -m services.migrations new
"message"`` writes the next revision (see env.py).
"""

import re
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "versions"

INITIAL = "0001_initial"
# the tables Base.metadata.create_all made before migrations existed (= revision 0001)
INITIAL_TABLES = frozenset({"accounts", "workloads", "allocations", "gpu_allocations", "usage_counters"})


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our scripts; env.py migrates ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # file name = revision id (``0002_add_ports.py``); '%%' escapes configparser
    config.set_main_option("file_template", "%%(rev)s")
    config.attributes["connection"] = connection
    return config


def upgrade_to_head(connection: Connection) -> None:
    """Bring the database on ``connection`` to head, adopting a pre-migration database.

    The caller holds the migration lock and the transaction.
    """
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables and tables & INITIAL_TABLES:
        # made by create_all before migrations: its tables *are* revision 0001
        missing = INITIAL_TABLES - tables
        if missing:
            raise RuntimeError(
                f"platform database has no alembic_version and lacks tables {sorted(missing)}: "
                "it is neither empty nor a complete pre-migration database; refusing to guess"
            )
        command.stamp(config, INITIAL)
    command.upgrade(config, "head")


def next_revision_id(message: str) -> str:
    """``NNNN_slug``: one more than the highest numbered revision in versions/."""
    numbers = [int(m.group(1)) for p in VERSIONS.glob("*.py") if (m := re.match(r"(\d{4})_", p.name))]
    # alembic_version.version_num is VARCHAR(32)
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:27].strip("_") or "change"
    return f"{max(numbers, default=0) + 1:04d}_{slug}"
