"""Tables of the platform database.

Docker is the truth of what runs (labels on every container); these tables hold
intent and history: accounts, workloads, and the resource ledger.
"""

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Naive UTC, as stored in the database."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# Constraint names PostgreSQL itself gives unnamed constraints, so a PostgreSQL database
# made before migrations existed has the same names as one made by them. Migrations
# need names to drop or alter a constraint; on SQLite, databases from that time have
# unnamed ones: pass this to ``op.batch_alter_table(..., naming_convention=...)`` there.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountStatus(str, enum.Enum):
    pending = "pending"  # signed up, waiting for an admin's approval
    active = "active"
    rejected = "rejected"


class Account(Base):
    """A person who can sign in. The hub's own user table holds the rest."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=AccountStatus.active.value)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    approved_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkloadKind(str, enum.Enum):
    notebook = "notebook"
    debug = "debug"
    job = "job"
    cache = "cache"


class WorkloadState(str, enum.Enum):
    queued = "queued"  # a job waiting for resources: nothing held, no container
    starting = "starting"  # resources allocated, container being created
    running = "running"
    ended = "ended"


class Workload(Base):
    """Anything a user runs in a container, from request to end."""

    __tablename__ = "workloads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    user: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16), default=WorkloadState.starting.value)
    region: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(64), nullable=True)
    image: Mapped[str] = mapped_column(String(512))
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    container_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    container_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_workloads_user_kind_created", "user", "kind", "created_at"),)


class Allocation(Base):
    """Resources held by one workload on one host (the ledger's line)."""

    __tablename__ = "allocations"

    workload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True
    )
    user: Mapped[str] = mapped_column(String(255), index=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    region: Mapped[str] = mapped_column(String(64))
    cpu_milli: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    gpu_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class GpuAllocation(Base):
    """One GPU index held by one workload. The unique constraint is the lock."""

    __tablename__ = "gpu_allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(64))
    gpu_index: Mapped[int] = mapped_column(Integer)
    workload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("allocations.workload_id", ondelete="CASCADE"), index=True
    )

    __table_args__ = (UniqueConstraint("host", "gpu_index", name="uq_gpu_host_index"),)


class UsageCounter(Base):
    """Running totals per host and per user, updated only by conditional UPDATEs.

    ``scope`` is ``host`` or ``user``. A conditional ``UPDATE ... WHERE used + x <= cap``
    is atomic on SQLite and PostgreSQL alike, so no two processes can over-commit.
    """

    __tablename__ = "usage_counters"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    cpu_milli: Mapped[int] = mapped_column(Integer, default=0)
    memory_mb: Mapped[int] = mapped_column(Integer, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)


class PortAllocation(Base):
    """One host port held by one workload (a debug session's range). The unique constraint is the lock."""

    __tablename__ = "port_allocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(64))
    port: Mapped[int] = mapped_column(Integer)
    workload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("workloads.id", ondelete="CASCADE"), index=True
    )

    __table_args__ = (UniqueConstraint("host", "port", name="uq_port_host_port"),)


class DebugSession(Base):
    """What a remote-debug workload needs beyond the workload row. Never the clear password."""

    __tablename__ = "debug_sessions"

    workload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))  # crypt(3), as the container's sshd wants it
    jupyter_token: Mapped[str] = mapped_column(String(64))  # the browser view's backend token
    jupyter_host_port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_first: Mapped[int] = mapped_column(Integer)
    port_count: Mapped[int] = mapped_column(Integer)
    ssh_user: Mapped[str] = mapped_column(String(64))


class ImageState(str, enum.Enum):
    saving = "saving"
    saved = "saved"
    failed = "failed"


class UserImage(Base):
    """An image in a user's private repository (a saved snapshot)."""

    __tablename__ = "user_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))  # debug | job: the pickers that offer it
    repository: Mapped[str] = mapped_column(String(512))
    state: Mapped[str] = mapped_column(String(16), default=ImageState.saving.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    docker_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # images pass 2 GB
    source_workload: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_name: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the session's task name
    pushed_to: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # registry reference, if pushed
    source_host: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (UniqueConstraint("owner", "name", "tag", name="uq_user_image_name_tag"),)

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


class ImageMember(Base):
    """Who may use a user's image besides its owner: a user or a department (hub group)."""

    __tablename__ = "image_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, ForeignKey("user_images.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # user | group
    name: Mapped[str] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("image_id", "kind", "name", name="uq_image_member"),)


class Job(Base):
    """What a training/evaluation workload needs beyond the workload row."""

    __tablename__ = "jobs"

    workload_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("workloads.id", ondelete="CASCADE"), primary_key=True
    )
    command: Mapped[str] = mapped_column(Text)
    time_limit_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    bypassed: Mapped[int] = mapped_column(Integer, default=0)  # times a later job started first
    groups: Mapped[list] = mapped_column(JSON, default=list)  # the owner's departments at submission (quota)
    folder: Mapped[str] = mapped_column(String(1024))  # holds output/ and log.txt
    end_requested: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it is being stopped
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CacheState(str, enum.Enum):
    queued = "queued"  # waiting for a copy slot
    copying = "copying"
    ready = "ready"
    failed = "failed"
    cancelled = "cancelled"


class Cache(Base):
    """A cache task: a data set copied into a region's fast storage, and the copy itself."""

    __tablename__ = "caches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    region: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)  # as the user gave it
    source_key: Mapped[str] = mapped_column(String(1024), index=True)  # resolved, to find duplicates
    path: Mapped[str] = mapped_column(String(1024))  # where the copy lives
    state: Mapped[str] = mapped_column(String(16), default=CacheState.queued.value)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    files_total: Mapped[int] = mapped_column(Integer, default=0)
    files_done: Mapped[int] = mapped_column(Integer, default=0)
    rate_bps: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class CacheFile(Base):
    """One file of a cache task's plan; ``done`` makes a copy resumable file by file."""

    __tablename__ = "cache_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_id: Mapped[str] = mapped_column(String(32), ForeignKey("caches.id", ondelete="CASCADE"))
    rel: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    checksum_algo: Mapped[str | None] = mapped_column(String(16), nullable=True)
    checksum: Mapped[str | None] = mapped_column(String(128), nullable=True)
    done: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_cache_files_cache_done", "cache_id", "done"),)


class CacheMember(Base):
    """Who a shared cache is shared with: a user or a department (hub group)."""

    __tablename__ = "cache_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_id: Mapped[str] = mapped_column(String(32), ForeignKey("caches.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # user | group
    name: Mapped[str] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("cache_id", "kind", "name", name="uq_cache_member"),)


class CacheUsage(Base):
    """A workload that mounted a cache: who, which, when."""

    __tablename__ = "cache_usage"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cache_id: Mapped[str] = mapped_column(String(32), ForeignKey("caches.id", ondelete="CASCADE"), index=True)
    workload_id: Mapped[str] = mapped_column(String(32), index=True)
    user: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    mounted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class HostRecord(Base):
    """A host's platform-side record: the spec of hosts admins added (config hosts have none
    here), and for every host its drain flag and what the last probe found."""

    __tablename__ = "hosts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    origin: Mapped[str] = mapped_column(String(8), default="added")  # added | config
    region: Mapped[str] = mapped_column(String(64))
    docker_url: Mapped[str] = mapped_column(String(512))
    tls: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {"ca":..., "cert":..., "key":...}
    address: Mapped[str | None] = mapped_column(String(255), nullable=True)
    gpus: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # declared inventory {"A100": 2}
    cpus: Mapped[float | None] = mapped_column(Float, nullable=True)  # as probed (or declared)
    memory_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    drained: Mapped[bool] = mapped_column(Boolean, default=False)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    probe_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    probed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    added_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)  # readers reload on change


class MaintenanceWindow(Base):
    """Planned maintenance of a host: placement avoids it, and the users it affects were told."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(64), index=True)
    starts_at: Mapped[datetime] = mapped_column(DateTime)
    ends_at: Mapped[datetime] = mapped_column(DateTime)
    message: Mapped[str] = mapped_column(Text)
    affected: Mapped[list] = mapped_column(JSON, default=list)  # [{workload, kind, user, email}] at submission
    emails_sent: Mapped[int] = mapped_column(Integer, default=0)
    email_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Notification(Base):
    """A message to one user; banners show until read (dismissed) or expired."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    banner: Mapped[bool] = mapped_column(Boolean, default=False)
    window_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("maintenance_windows.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    read_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    __table_args__ = (Index("ix_notifications_user_read", "user", "read_at"),)
