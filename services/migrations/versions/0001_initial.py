"""Initial schema: the tables services/models.py had when migrations began.

A database made by ``create_all`` before then is stamped with this revision, not rebuilt.
New migration: change models.py, run ``python -m services.migrations new "what changed"``,
then read and fix versions/NNNN_what_changed.py. Constraint names follow
services.models.NAMING_CONVENTION (PostgreSQL's own defaults).

Revision ID: 0001_initial
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("approved_by", sa.String(length=255), nullable=True),
        sa.Column("password_changed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("accounts_pkey")),
        sa.UniqueConstraint("email", name=op.f("accounts_email_key")),
        sa.UniqueConstraint("username", name=op.f("accounts_username_key")),
    )
    op.create_table(
        "usage_counters",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("usage_counters_pkey")),
    )
    op.create_table(
        "workloads",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=True),
        sa.Column("image", sa.String(length=512), nullable=False),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("container_name", sa.String(length=255), nullable=True),
        sa.Column("container_id", sa.String(length=80), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("workloads_pkey")),
    )
    op.create_index(op.f("ix_workloads_user"), "workloads", ["user"])
    op.create_index("ix_workloads_user_kind_created", "workloads", ["user", "kind", "created_at"])
    op.create_table(
        "allocations",
        sa.Column("workload_id", sa.String(length=32), nullable=False),
        sa.Column("user", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("cpu_milli", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpu_model", sa.String(length=128), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workload_id"], ["workloads.id"], name=op.f("allocations_workload_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("workload_id", name=op.f("allocations_pkey")),
    )
    op.create_index(op.f("ix_allocations_host"), "allocations", ["host"])
    op.create_index(op.f("ix_allocations_user"), "allocations", ["user"])
    op.create_table(
        "gpu_allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=64), nullable=False),
        sa.Column("gpu_index", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["allocations.workload_id"],
            name=op.f("gpu_allocations_workload_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("gpu_allocations_pkey")),
        sa.UniqueConstraint("host", "gpu_index", name="uq_gpu_host_index"),
    )
    op.create_index(op.f("ix_gpu_allocations_workload_id"), "gpu_allocations", ["workload_id"])


def downgrade() -> None:
    for table in ("gpu_allocations", "allocations", "workloads", "usage_counters", "accounts"):
        op.drop_table(table)  # drops its indexes too
