"""The "Start my Server" options form: rendering, and turning its fields into options.

The form only collects input; :func:`services.options.validate_request` judges it, the
same way it judges a JSON body sent to the REST API.
"""

import asyncio
from itertools import zip_longest
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.identity import Requester
from services.workloads import last_options

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)

DEFAULT_MOUNTS = [{"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}]


def _first(formdata: dict, key: str) -> str:
    values = formdata.get(key) or [""]
    return values[0]


def options_from_form(formdata: dict) -> dict:
    """Form fields (lists of strings) -> the JSON shape the REST API takes."""
    options = {key: _first(formdata, key) for key in ("image", "region", "cpu", "memory_gb", "gpus", "gpu_model")}
    rows = zip_longest(formdata.get("mount_host", []), formdata.get("mount_container", []),
                       formdata.get("mount_mode", []), fillvalue="")
    options["mounts"] = [
        {"host_path": host, "container_path": container, "read_only": mode == "ro"}
        for host, container, mode in rows
        if host.strip() or container.strip()
    ]
    return options


def prefill_for(platform, user: str, submitted, defaults: dict) -> dict:
    """What the form shows: the last submitted options, else the last started, else defaults."""
    previous = submitted or last_options(platform, user, "notebook")
    values = {**defaults, "mounts": DEFAULT_MOUNTS}
    if isinstance(previous, dict):
        values.update({k: v for k, v in previous.items() if k in values or k == "gpu_model"})
    if not isinstance(values.get("mounts"), list):
        values["mounts"] = []
    return values


async def render_options_form(spawner) -> str:
    """The form's HTML. Hub objects are read here, on the event loop; the platform's data
    (capacity, storage roots, last choices) in a thread."""
    requester = Requester.from_hub_user(spawner.user)
    submitted = spawner.orm_spawner.user_options if spawner.orm_spawner is not None else None
    return await asyncio.to_thread(_render, spawner.platform, requester, submitted)


def _render(platform, requester: Requester, submitted) -> str:
    images = platform.catalog.images_for(requester, "notebook")
    capacity = platform.ledger.capacity()
    defaults = {
        "image": images[0].name if images else "",
        "region": capacity[0].region if capacity else "",
        "gpu_model": "",
        **platform.quotas.request_defaults,
    }
    groups: dict[str, list] = {}
    for image in images:
        groups.setdefault(image.group, []).append(image)
    return _env.get_template("options_form.html").render(
        image_groups=groups,
        capacity=capacity,
        limits=platform.quotas.limits_for(requester),
        roots=platform.paths.roots_for(requester),
        values=prefill_for(platform, requester.name, submitted, defaults),
    )
