"""The "Start my Server" options form: rendering, and turning its fields into options.

The form only collects input; :func:`services.options.validate_request` judges it, the
same way it judges a JSON body sent to the REST API.
"""

import asyncio
from itertools import zip_longest
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.identity import Requester
from services.form_data import workload_form_context
from services.workloads import last_options

# the shared workload fields live with the other page templates in handlers/templates
_env = Environment(
    loader=FileSystemLoader([Path(__file__).parent / "templates",
                             Path(__file__).parent.parent / "handlers" / "templates"]),
    autoescape=select_autoescape(default=True, default_for_string=True),
)

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


async def render_options_form(spawner) -> str:
    """The form's HTML. Hub objects are read here, on the event loop; the platform's data
    (capacity, storage roots, last choices) in a thread."""
    requester = Requester.from_hub_user(spawner.user)
    submitted = spawner.orm_spawner.user_options if spawner.orm_spawner is not None else None
    return await asyncio.to_thread(_render, spawner.platform, requester, submitted)


def _render(platform, requester: Requester, submitted) -> str:
    # the last submitted options (kept by the hub), else those of the last started server
    previous = submitted or last_options(platform, requester.name, "notebook")
    context = workload_form_context(platform, requester, "notebook", previous)
    return _env.get_template("options_form.html").render(**context)
