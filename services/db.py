"""The platform database: one SQLAlchemy engine per process.

SQLite (the default) is shared by the hub and the labdeck service, so it runs in
WAL mode with a busy timeout, and writes that must be atomic across processes
(the resource ledger) open their transaction with ``BEGIN IMMEDIATE``.
PostgreSQL works by URL; there the ledger relies on row locks taken by its
conditional UPDATEs and on unique constraints.
"""

import fcntl
import sqlite3
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .models import Base

# Every SQLite database of the platform, the hub's own included: a write-ahead log, and no fsync
# per commit (a commit survives a crash of the process; a power cut may lose the last ones).
# JupyterHub commits on its event loop, and with an fsync per commit every start waited behind
# a snapshot or build that filled the disk's queue (benchmarks/isolation.py).
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def sqlite_connector(path: str):
    """``creator`` for SQLAlchemy (``c.JupyterHub.db_kwargs``): connections to the SQLite file at
    ``path`` with SQLITE_PRAGMAS, otherwise as JupyterHub opens them (usable from any thread)."""

    def connect():
        conn = sqlite3.connect(path, check_same_thread=False)
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        return conn

    return connect


class Database:
    """Engine and session factory for the platform database."""

    def __init__(self, url: str, echo: bool = False):
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs = {"echo": echo, "future": True}
        if self.is_sqlite:
            if self.url.database and self.url.database != ":memory:":
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._configure_sqlite(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._local = threading.local()
        self._write_sessions = sessionmaker(
            self.engine.execution_options(labdeck_immediate=True),
            expire_on_commit=False,
        )

    @staticmethod
    def _configure_sqlite(engine):
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # let SQLAlchemy, not pysqlite, emit BEGIN so we can choose its kind
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS + ("PRAGMA busy_timeout=30000", "PRAGMA foreign_keys=ON"):
                cur.execute(pragma)
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            immediate = conn.get_execution_options().get("labdeck_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def create_schema(self):
        """Create missing tables (idempotent). Tests only: deployments use :meth:`upgrade`."""
        Base.metadata.create_all(self.engine)

    # any constant both processes agree on; names the PostgreSQL advisory lock
    _PG_MIGRATION_LOCK = 0x6C616264  # "labd"

    def upgrade(self):
        """Bring the schema to the newest migration; safe to call at once from many processes.

        An empty database gets every migration; one made by :meth:`create_schema` before
        migrations existed is stamped as revision 0001 and upgraded from there. All
        migrations run in one transaction under a lock (a lock file beside the SQLite file,
        a transaction-level advisory lock on PostgreSQL), so the second caller waits and
        then finds nothing to do.
        """
        from .migrations import upgrade_to_head

        with self._migration_file_lock(), self.engine.connect() as conn:
            if self.is_sqlite:
                # a table copy by batch mode drops the old table, which with foreign keys
                # on would cascade-delete child rows; the pragma is ignored inside a transaction
                conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    if not self.is_sqlite:
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._PG_MIGRATION_LOCK})
                    upgrade_to_head(conn)
                    if self.is_sqlite:
                        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if broken:
                            raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
            finally:
                if self.is_sqlite:
                    conn.connection.driver_connection.execute("PRAGMA foreign_keys=ON")

    def _migration_file_lock(self):
        """An exclusive lock on ``<sqlite file>.migrate.lock``; nothing for other databases."""
        if not self.is_sqlite or self.url.database in (None, "", ":memory:"):
            return nullcontext()
        return _flock(Path(self.url.database + ".migrate.lock"))

    @staticmethod
    @contextmanager
    def _scope(factory) -> Session:
        with factory() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def _outer_immediate(self) -> Session:
        """A write-locked session, unless this thread is inside one already: a nested session
        then reads without the lock (asking for it again would wait on ourselves)."""
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        try:
            with self._scope(self._sessions if depth else self._write_sessions) as s:
                yield s
        finally:
            self._local.depth = depth

    def session(self):
        """A session for reads and writes; commits on success.

        On SQLite it takes the write lock when it begins (``BEGIN IMMEDIATE``): a transaction
        that reads and then writes would otherwise fail at once with "database is locked"
        whenever the other process committed in between (the busy timeout does not apply to
        that upgrade). Pure reads on hot paths use :meth:`read`.
        """
        return self._outer_immediate()

    def read(self):
        """A session for reads only (SQLite: no write lock, never waits for writers)."""
        return self._scope(self._sessions)

    def write_transaction(self):
        """A session whose transaction holds the database's write lock from the start.

        Use it for check-then-write sequences that must not interleave with another
        process (allocation of resources). On PostgreSQL it is an ordinary transaction.
        Like :meth:`session` now, which it remains for the callers that say what they need.
        """
        return self._outer_immediate()

    def dispose(self):
        self.engine.dispose()


@contextmanager
def _flock(path: Path):
    # never deleted: removing a lock file while another process waits on it breaks the lock
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
