"""The platform object: configuration and the shared policies, one per process.

Both the hub (spawner, authenticator) and the labdeck service build it from the
same traitlets config (``jupyterhub_config.py``) with :func:`get_platform`.
"""

import os
from functools import cached_property
from pathlib import Path

from traitlets import Integer, Unicode, default
from traitlets.config import Config, LoggingConfigurable


class Platform(LoggingConfigurable):
    """Settings every part of labdeck shares."""

    data_dir = Unicode(
        help="""Directory for the platform's state: databases, user storage, secrets.

        Defaults to $LABDECK_DATA_DIR, else ./data next to jupyterhub_config.py's working directory.
        """,
    ).tag(config=True)

    @default("data_dir")
    def _default_data_dir(self):
        return os.path.abspath(os.environ.get("LABDECK_DATA_DIR", "data"))

    db_url = Unicode(
        help="""SQLAlchemy URL of the platform database (not the hub's own).

        Default: an SQLite file in data_dir. PostgreSQL works too:
        ``postgresql+psycopg://user:pw@host/labdeck``.
        """,
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self):
        return f"sqlite:///{Path(self.data_dir) / 'labdeck.sqlite'}"

    instance = Unicode(
        "labdeck",
        help="""Name of this platform instance.

        Every container carries the label ``labdeck.instance=<instance>`` and its
        name starts with it, so two platforms (a test run beside a real one) sharing
        a Docker engine never see or touch each other's containers.
        """,
    ).tag(config=True)

    docker_threads = Integer(
        16,
        help="Threads for short Docker calls (create, start, stop, inspect). Never one thread for all.",
    ).tag(config=True)

    long_docker_threads = Integer(
        4,
        help="Threads for long Docker operations (commit, pull, build), kept apart from starts and stops.",
    ).tag(config=True)

    docker_timeout = Integer(
        60, help="Seconds before a single Docker API call gives up."
    ).tag(config=True)

    long_docker_timeout = Integer(
        3600,
        help="Seconds the platform waits for a long Docker operation (commit, pull, push). A commit "
             "answers only when it is done, and the engine finishes it even when nobody waits any "
             "more: a snapshot still saving after this long is marked failed.",
    ).tag(config=True)

    service_prefix = Unicode(
        "/services/labdeck/",
        help="URL path of the labdeck service (the hub's base URL + services/labdeck/).",
    ).tag(config=True)

    # ---- the shared policies, built lazily from the same config ----

    @cached_property
    def db(self):
        from .db import Database

        database = Database(self.db_url)
        database.upgrade()
        return database

    @cached_property
    def resources(self):
        from .resources import Resources

        return Resources(parent=self)

    @cached_property
    def paths(self):
        from .paths import PathPolicy

        return PathPolicy(parent=self)

    @cached_property
    def quotas(self):
        from .quotas import Quotas

        return Quotas(parent=self)

    @cached_property
    def catalog(self):
        from .images import ImageCatalog

        return ImageCatalog(parent=self)

    @cached_property
    def mailer(self):
        from .mailer import Mailer

        return Mailer(parent=self)

    @cached_property
    def registry(self):
        from .repository import ImageRegistry

        return ImageRegistry(parent=self)

    @cached_property
    def recipe(self):
        from .recipe import ContainerRecipe

        return ContainerRecipe(parent=self)

    @cached_property
    def docker(self):
        from .docker_pool import DockerPool

        return DockerPool(self)

    @cached_property
    def debug(self):
        from .debug import DebugSessions

        return DebugSessions(parent=self)

    @cached_property
    def jobs(self):
        from .jobs import JobSettings

        return JobSettings(parent=self)

    @cached_property
    def job_queue(self):
        from .job_queue import JobQueue

        return JobQueue(self)

    @cached_property
    def job_logs(self):
        from .job_logs import JobLogs

        return JobLogs(self)

    @cached_property
    def cache_settings(self):
        from .caches import CacheSettings

        return CacheSettings(parent=self)

    @cached_property
    def caches(self):
        from .caches import CacheAccess

        return CacheAccess(self)

    @cached_property
    def cache_runner(self):
        from .cache_runner import CacheRunner

        return CacheRunner(self)

    @cached_property
    def finalizing_jobs(self) -> dict:
        """Job id -> the task finishing it (services.jobs.finalize runs once per job)."""
        return {}

    @cached_property
    def background(self) -> set:
        """Tasks running in the background (kept referenced until they finish)."""
        return set()

    def spawn_background(self, coro):
        """Run ``coro`` in the background; its failure is logged, never lost silently."""
        import asyncio

        task = asyncio.ensure_future(coro)
        self.background.add(task)

        def done(t):
            self.background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.log.error("Background task failed", exc_info=t.exception())

        task.add_done_callback(done)
        return task

    @cached_property
    def ledger(self):
        from .ledger import Ledger

        return Ledger(self.db, self.resources, self.quotas)


_platforms: dict[int, Platform] = {}


def get_platform(config: Config | None = None, log=None) -> Platform:
    """The process's Platform for this config object (built once)."""
    key = id(config)
    if key not in _platforms:
        kwargs = {"config": config or Config()}
        if log is not None:
            kwargs["log"] = log
        _platforms[key] = Platform(**kwargs)
    return _platforms[key]
