"""What every workload form shows: the images this user may run, free capacity per region
and GPU model, the user's quota, the places they may map from, and pre-filled values.

One function for "Start my Server", remote debug and (later) training, so the forms agree.
"""

from .identity import Requester

DEFAULT_MOUNTS = [{"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}]


def workload_form_context(platform, requester: Requester, kind: str, previous: dict | None) -> dict:
    """Template context for the shared workload fields; ``previous`` pre-fills them."""
    images = platform.catalog.images_for(requester, kind)
    capacity = platform.ledger.capacity()
    values = {
        "image": images[0].name if images else "",
        "region": capacity[0].region if capacity else "",
        "gpu_model": "",
        **platform.quotas.request_defaults,
        "mounts": DEFAULT_MOUNTS,
    }
    if isinstance(previous, dict):
        values.update({k: v for k, v in previous.items() if k != "password"})
    if not isinstance(values.get("mounts"), list):
        values["mounts"] = []
    groups: dict[str, list] = {}
    for image in images:
        groups.setdefault(image.group, []).append(image)
    return {
        "image_groups": groups,
        "capacity": capacity,
        "limits": platform.quotas.limits_for(requester),
        "roots": platform.paths.roots_for(requester),
        "values": values,
    }
