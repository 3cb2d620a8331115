"""Schema migrations: every database, fresh or made before migrations, reaches head without losing rows."""

import multiprocessing
import shutil
import sqlite3
from contextlib import closing

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from services import migrations
from services.db import Database
from services.migrations.__main__ import new
from services.models import NAMING_CONVENTION, Account, Base, GpuAllocation, Workload

from .platform_fixtures import make_platform

HEAD = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()

# What Base.metadata.create_all made on SQLite before migrations existed (issue 2): frozen,
# because such databases are deployed. Its constraints have no names.
PRE_MIGRATION_SCHEMA = """
CREATE TABLE accounts (id INTEGER NOT NULL, username VARCHAR(255) NOT NULL, email VARCHAR(320) NOT NULL,
    password_hash VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, created_at DATETIME NOT NULL,
    approved_by VARCHAR(255), password_changed_at DATETIME NOT NULL,
    PRIMARY KEY (id), UNIQUE (username), UNIQUE (email));
CREATE TABLE workloads (id VARCHAR(32) NOT NULL, kind VARCHAR(16) NOT NULL, user VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL, region VARCHAR(64) NOT NULL, host VARCHAR(64),
    image VARCHAR(512) NOT NULL, cpu_milli INTEGER NOT NULL, memory_mb INTEGER NOT NULL, gpu_model VARCHAR(128),
    gpu_count INTEGER NOT NULL, options JSON NOT NULL, container_name VARCHAR(255), container_id VARCHAR(80),
    end_reason TEXT, created_at DATETIME NOT NULL, started_at DATETIME, ended_at DATETIME, PRIMARY KEY (id));
CREATE INDEX ix_workloads_user_kind_created ON workloads (user, kind, created_at);
CREATE INDEX ix_workloads_user ON workloads (user);
CREATE TABLE usage_counters (scope VARCHAR(8) NOT NULL, "key" VARCHAR(255) NOT NULL, cpu_milli INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL, gpus INTEGER NOT NULL, PRIMARY KEY (scope, "key"));
CREATE TABLE allocations (workload_id VARCHAR(32) NOT NULL, user VARCHAR(255) NOT NULL, host VARCHAR(64) NOT NULL,
    region VARCHAR(64) NOT NULL, cpu_milli INTEGER NOT NULL, memory_mb INTEGER NOT NULL, gpu_model VARCHAR(128),
    gpu_count INTEGER NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (workload_id),
    FOREIGN KEY(workload_id) REFERENCES workloads (id) ON DELETE CASCADE);
CREATE INDEX ix_allocations_user ON allocations (user);
CREATE INDEX ix_allocations_host ON allocations (host);
CREATE TABLE gpu_allocations (id INTEGER NOT NULL, host VARCHAR(64) NOT NULL, gpu_index INTEGER NOT NULL,
    workload_id VARCHAR(32) NOT NULL, PRIMARY KEY (id), CONSTRAINT uq_gpu_host_index UNIQUE (host, gpu_index),
    FOREIGN KEY(workload_id) REFERENCES allocations (workload_id) ON DELETE CASCADE);
CREATE INDEX ix_gpu_allocations_workload_id ON gpu_allocations (workload_id);
INSERT INTO accounts VALUES (1, 'alice', 'alice@example.org', 'h', 'active', '2025-01-01 00:00:00', NULL,
    '2025-01-01 00:00:00');
INSERT INTO workloads VALUES ('nb-1', 'notebook', 'alice', '', 'running', 'default', 'a1', 'labdeck/notebook:latest',
    1000, 2048, 'A100', 1, '{}', 'labdeck-alice', NULL, NULL, '2025-01-01 00:00:00', NULL, NULL);
INSERT INTO allocations VALUES ('nb-1', 'alice', 'a1', 'default', 1000, 2048, 'A100', 1, '2025-01-01 00:00:00');
INSERT INTO gpu_allocations VALUES (1, 'a1', 0, 'nb-1');
INSERT INTO usage_counters VALUES ('host', 'a1', 1000, 2048, 1);
"""


def sqlite_db(tmp_path, name="labdeck.sqlite") -> Database:
    return Database(f"sqlite:///{tmp_path / name}")


def pre_migration_db(tmp_path) -> Database:
    path = tmp_path / "old.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(PRE_MIGRATION_SCHEMA)
    return Database(f"sqlite:///{path}")


def revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_migrations_form_one_line():
    heads = ScriptDirectory.from_config(migrations.alembic_config()).get_heads()
    assert len(heads) == 1, f"migrations branch into heads {heads}: set one's down_revision to the other"


def test_platform_database_is_migrated_to_head(tmp_path):
    db = make_platform(tmp_path).db
    assert revision(db) == HEAD
    assert set(Base.metadata.tables) <= set(inspect(db.engine).get_table_names())


def test_migrated_schema_matches_models(tmp_path):
    db = sqlite_db(tmp_path)
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not diff, (
        f"models.py changed without a migration: {diff}; add one under services/migrations/versions/ "
        '(python -m services.migrations new "what changed")'
    )


def test_pre_migration_database_is_stamped_and_keeps_its_rows(tmp_path):
    db = pre_migration_db(tmp_path)
    db.upgrade()
    assert revision(db) == HEAD
    with db.session() as s:
        assert s.scalars(select(Account.email)).all() == ["alice@example.org"]
        workload = s.get(Workload, "nb-1")
        assert (workload.state, workload.gpu_model, workload.options) == ("running", "A100", {})
        assert [(g.host, g.gpu_index) for g in s.scalars(select(GpuAllocation))] == [("a1", 0)]


def test_constraints_of_pre_migration_database_can_be_dropped_by_name(tmp_path):
    """The recipe in script.py.mako: SQLite databases from before migrations have unnamed constraints."""
    db = pre_migration_db(tmp_path)
    db.upgrade()
    with db.engine.begin() as conn:
        op = Operations(MigrationContext.configure(conn))
        with op.batch_alter_table("accounts", naming_convention=NAMING_CONVENTION) as batch:
            batch.drop_constraint("accounts_email_key", type_="unique")
        uniques = inspect(conn).get_unique_constraints("accounts")
    assert [u["column_names"] for u in uniques] == [["username"]]
    with db.session() as s:
        assert s.scalars(select(Account.username)).all() == ["alice"]


def test_incomplete_database_without_version_is_refused(tmp_path):
    path = tmp_path / "odd.sqlite"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
    db = Database(f"sqlite:///{path}")
    with pytest.raises(RuntimeError, match=r"lacks tables \['allocations', 'gpu_allocations'"):
        db.upgrade()
    assert set(inspect(db.engine).get_table_names()) == {"accounts"}


def test_second_upgrade_changes_nothing(tmp_path):
    db = pre_migration_db(tmp_path)
    db.upgrade()

    def snapshot():
        with db.engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master ORDER BY name").all()
            rows = {t: conn.exec_driver_sql(f"SELECT * FROM {t}").all() for t in Base.metadata.tables}
        return schema, rows

    before = snapshot()
    db.upgrade()
    assert snapshot() == before
    assert revision(db) == HEAD


def _upgrade_when_released(url, barrier):
    db = Database(url)
    db.engine.connect().close()  # file opened, WAL set: only upgrade() is left to race
    barrier.wait(timeout=60)
    db.upgrade()


def test_processes_upgrading_one_fresh_file_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_upgrade_when_released, args=(url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    db = Database(url)
    assert revision(db) == HEAD
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1


@pytest.mark.parametrize(
    "existing, message, expected",
    [
        ([], "Initial", "0001_initial"),
        (["0001_initial.py"], "Add a port range!", "0002_add_a_port_range"),
        (["0001_initial.py", "0009_x.py", "README"], "  ", "0010_change"),
        (["0001_initial.py"], "x" * 60, "0002_" + "x" * 27),
    ],
)
def test_revision_ids_are_sequential_and_fit_the_version_table(tmp_path, monkeypatch, existing, message, expected):
    for name in existing:
        (tmp_path / name).touch()
    monkeypatch.setattr(migrations, "VERSIONS", tmp_path)
    assert migrations.next_revision_id(message) == expected
    assert len(expected) <= 32


@pytest.fixture
def scripts(tmp_path, monkeypatch):
    """A copy of services/migrations to add revisions to."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations.HERE, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "HERE", scripts)
    monkeypatch.setattr(migrations, "VERSIONS", scripts / "versions")
    return scripts


def test_table_copy_of_a_parent_table_keeps_child_rows(tmp_path, scripts):
    # SQLite alters a table by copying it and dropping the original; with foreign keys
    # on, that DROP would cascade-delete allocations and GPU allocations
    (scripts / "versions" / "9999_copy_workloads.py").write_text(
        f"""
from alembic import op
import sqlalchemy as sa
revision, down_revision, branch_labels, depends_on = "9999_copy_workloads", {HEAD!r}, None, None
def upgrade():
    with op.batch_alter_table("workloads", recreate="always") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))
"""
    )
    db = pre_migration_db(tmp_path)
    db.upgrade()
    assert revision(db) == "9999_copy_workloads"
    with db.session() as s:
        assert [(g.host, g.gpu_index) for g in s.scalars(select(GpuAllocation))] == [("a1", 0)]
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM allocations").scalar() == 1


def test_new_command_writes_the_next_revision(scripts):
    new("Add a port range")
    written = scripts / "versions" / f"{int(HEAD[:4]) + 1:04d}_add_a_port_range.py"
    text = written.read_text()
    assert f"down_revision = {HEAD!r}" in text
    # models unchanged: nothing to migrate
    assert "op." not in text.split("def upgrade()")[1].split("def downgrade()")[0]
