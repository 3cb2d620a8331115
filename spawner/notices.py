"""Banners (maintenance notices) on the hub's own pages.

``JupyterHub.template_vars`` calls a callable value with the signed-in user for every page it
renders; :func:`banner_vars` makes one that returns that user's active banners, so the hub's
pages show them as the service's do (``handlers/templates/page.html``)::

    c.JupyterHub.template_vars["labdeck_banners"] = banner_vars(c)
"""

import logging

from services import notifications
from services.platform import get_platform

log = logging.getLogger("JupyterHub")


def banner_vars(config):
    """A ``template_vars`` value: ``user -> [banner, ...]``; empty for no user or on any error.

    The Platform (and its database) is built on the first page, not when the config file is
    read: by then the whole configuration, site settings included, is loaded.
    """

    def banners(user) -> list[dict]:
        name = getattr(user, "name", None)
        if not name:
            return []
        try:
            return notifications.banners_for(get_platform(config, log).db, name)
        except Exception as e:  # a page must render even if the platform database does not answer
            log.warning("Could not read banners for %s: %s", name, e)
            return []

    return banners
