"""Both SQLite databases (the hub's and the platform's) keep a write-ahead log and do not fsync
every commit: the hub commits on its event loop, where an fsync behind a busy disk stalls
every user's request."""

import sqlite3

import pytest

from services.db import Database, sqlite_connector


def settings(conn) -> tuple[str, int]:
    return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]


def test_the_hubs_connector_sets_a_write_ahead_log_and_normal_sync(tmp_path):
    conn = sqlite_connector(str(tmp_path / "jupyterhub.sqlite"))()
    try:
        assert settings(conn) == ("wal", 1)  # 1: NORMAL (2, the default, is FULL)
    finally:
        conn.close()


def test_the_platform_database_has_the_same_settings(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'labdeck.sqlite'}")
    with db.engine.connect() as conn:
        assert settings(conn.connection.driver_connection) == ("wal", 1)


@pytest.mark.integration
def test_the_running_hubs_database_is_in_wal_mode(hub):
    conn = sqlite3.connect(hub.data_dir / "jupyterhub.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
