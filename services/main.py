"""Entry point of the labdeck service: ``python -m services.main``, started by the hub.

The hub passes the service its URL, prefix, API token and OAuth client in JUPYTERHUB_*
variables; the platform configuration comes from the same jupyterhub_config.py the hub
reads (path in LABDECK_CONFIG_FILE), so both processes share one set of policies.

This module is the composition root: it is the one place in services/ that loads the web
layer (handlers/), which itself only depends on services/.
"""

import asyncio
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

from tornado.log import enable_pretty_logging
from traitlets.config import PyFileConfigLoader

from .platform import get_platform

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("labdeck.service")


def load_config():
    path = Path(os.environ.get("LABDECK_CONFIG_FILE") or REPO / "jupyterhub_config.py")
    return PyFileConfigLoader(path.name, path=str(path.parent)).load_config()


async def serve() -> None:
    from handlers.app import make_app  # the web layer (see the module docstring)

    from .monitor import Monitor

    platform = get_platform(load_config(), log)
    platform.db  # migrate before taking requests
    app = make_app(platform)
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = app.listen(url.port, url.hostname, xheaders=True)
    log.info("labdeck service listening on %s (prefix %s)", url.geturl(), app.settings["service_prefix"])
    await Monitor(platform).start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("labdeck service stopping; running sessions keep running")
    server.stop()
    await platform.cache_runner.halt()
    # a follower blocked on a quiet job's log would keep the process from exiting until the job ends
    platform.job_logs.halt()
    log.info("labdeck service stopped")


def main() -> None:
    enable_pretty_logging()
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
