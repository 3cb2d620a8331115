"""Reading the fields every workload form shares (handlers/templates/workload-fields.html)."""

from itertools import zip_longest


def form_mounts(handler) -> list[dict]:
    """The path-mapping rows of a workload form, as the API takes them; blank rows dropped."""
    rows = zip_longest(handler.get_body_arguments("mount_host"), handler.get_body_arguments("mount_container"),
                       handler.get_body_arguments("mount_mode"), fillvalue="")
    return [{"host_path": h, "container_path": c, "read_only": m == "ro"} for h, c, m in rows if h.strip() or c.strip()]
