"""The product's modules, in the order the navigation shows them.

Shared by the hub's pages (through ``JupyterHub.template_vars``) and the labdeck service's
pages, so the site has one navigation. A module whose page does not exist yet is shown
greyed out with "coming soon", never as a link to a missing page.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Module:
    key: str
    title: str
    path: str | None  # relative to the hub's base URL ("hub:...") or the service ("svc:..."); None: not yet


MODULES = (
    Module("experiment", "Online experiment", "hub:home"),
    Module("images", "Private repository", "svc:images"),
    Module("debug", "Remote debug", "svc:debug"),
    Module("jobs", "Training / evaluation", "svc:jobs"),
    Module("cache", "High-speed cache", "svc:caches"),
    Module("centre", "Personal centre", "svc:centre"),
)


def nav_items(hub_base: str, service_base: str) -> list[dict]:
    """The modules with absolute URLs for this deployment."""
    items = []
    for module in MODULES:
        url = None
        if module.path:
            where, _, rest = module.path.partition(":")
            url = (hub_base if where == "hub" else service_base) + rest
        items.append({"key": module.key, "title": module.title, "url": url})
    return items
