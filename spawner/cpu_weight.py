"""The hub's CPU weight, set as it reads jupyterhub_config.py (services/cpu_groups.py says why)."""

import os

from docker.errors import DockerException

from services.cpu_groups import CpuGroups
from services.docker_pool import DEFAULT_DOCKER_URL, make_client

from .hub_process import running_hub


def weigh_the_hub(config) -> None:
    """Called last in jupyterhub_config.py, with its whole config: the hub joins the platform's
    group before it starts its proxy and service (they inherit it), and prepares the group of
    the servers people wait for. Only the hub: the labdeck service and tests read the same
    file. Without root or a cgroup file system, one log line says what stays as it was."""
    hub = running_hub()
    if hub is None:
        return
    if os.geteuid() != 0:
        hub.log.info("CPU weight: not root; the hub and the servers keep the default weight")
        return
    groups = CpuGroups(config=config, log=hub.log)
    joined = groups.join_platform_group(os.getpid())
    try:
        driver = make_client(DEFAULT_DOCKER_URL, timeout=5).info().get("CgroupDriver", "")
    except (DockerException, OSError) as e:
        hub.log.warning("CPU weight: the local engine does not answer (%s); servers stay in its group", e)
        driver = ""
    parent = groups.prepare_interactive(driver) if driver else ""
    hub.log.info("CPU weight %d: hub in %s, notebooks and debug sessions under %s", groups.shares,
                 groups.platform_group if joined else "its own cgroup", parent or "Docker's group")
