"""The platform database: one SQLAlchemy engine per process.

SQLite (the default) is shared by the hub and the labdeck service, so it runs in
WAL mode with a busy timeout, and writes that must be atomic across processes
(the resource ledger) open their transaction with ``BEGIN IMMEDIATE``.
PostgreSQL works by URL; there the ledger relies on row locks taken by its
conditional UPDATEs and on unique constraints.
"""

from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from .models import Base


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
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            immediate = conn.get_execution_options().get("labdeck_immediate")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def create_schema(self):
        """Create missing tables (idempotent)."""
        Base.metadata.create_all(self.engine)

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

    def session(self):
        """A session for reads and ordinary writes; commits on success."""
        return self._scope(self._sessions)

    def write_transaction(self):
        """A session whose transaction holds the database's write lock from the start.

        Use it for check-then-write sequences that must not interleave with another
        process (allocation of resources). On PostgreSQL it is an ordinary transaction.
        """
        return self._scope(self._write_sessions)

    def dispose(self):
        self.engine.dispose()
