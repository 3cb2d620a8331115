"""The one container recipe: how every labdeck container is hardened, limited and labelled.

Notebooks, debug sessions, jobs and cache tasks all get their Docker create arguments
from :meth:`ContainerRecipe.build`, so limits, capabilities and labels never drift apart.
"""

from dataclasses import dataclass
from functools import cached_property

from docker.types import DeviceRequest, Mount as DockerMount
from traitlets import Dict, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from .cpu_groups import CpuGroups
from .ledger import Placement
from .paths import Mount
from .resources import GPU_SOURCE_DETECTED, Host

LABEL_PREFIX = "labdeck."
CAPABILITIES_LABEL = "labdeck.capabilities"
# On a warm server of the hub's pool (spawner/warm_pool.py): "standby" from its creation on,
# since labels cannot change; its workload row says whether and by whom it was claimed.
POOL_LABEL = "labdeck.pool"


class RecipeError(ValueError):
    """The image asks for something the platform does not grant."""


@dataclass(frozen=True)
class ContainerSpec:
    """Arguments for ``APIClient.create_container`` (``host_config`` still a plain dict)."""

    name: str
    image: str
    create_kwargs: dict
    host_config: dict
    labels: dict

    def create(self, client):
        """Create the container with a low-level docker client; returns its id."""
        kwargs = dict(self.create_kwargs)
        kwargs["host_config"] = client.create_host_config(**self.host_config)
        return client.create_container(image=self.image, name=self.name, labels=self.labels, **kwargs)["Id"]


def workload_labels(instance: str, *, workload_id: str, kind: str, user: str,
                    placement: Placement) -> dict[str, str]:
    """Labels from which the ledger can be rebuilt after any restart."""
    return {
        "labdeck.instance": instance,
        "labdeck.id": workload_id,
        "labdeck.kind": kind,
        "labdeck.user": user,
        "labdeck.region": placement.region,
        "labdeck.host": placement.host,
        "labdeck.gpus": ",".join(str(i) for i in placement.gpu_indices),
        "labdeck.gpu_model": placement.gpu_model or "",
        "labdeck.cpu_milli": str(placement.cpu_milli),
        "labdeck.memory_mb": str(placement.memory_mb),
        # set on every container, empty where unused, so none is inherited from a snapshot image
        "labdeck.ports": "",
        "labdeck.server_name": "",
    }


class ContainerRecipe(LoggingConfigurable):
    pids_limit = Integer(4096, help="Most processes/threads one container may run.").tag(config=True)

    shm_size_mb = Integer(
        2048,
        help="Upper bound of /dev/shm (MB); a container gets half its memory limit up to this "
             "(data loaders need more than Docker's 64 MB).",
    ).tag(config=True)

    allowed_capabilities = List(
        Unicode(),
        ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE",
         "KILL", "NET_BIND_SERVICE"],
        help="Linux capabilities an image may ask for in its 'labdeck.capabilities' label. "
             "Everything else stays dropped (cap_drop ALL).",
    ).tag(config=True)

    network = Unicode("bridge", help="Docker network containers join.").tag(config=True)

    cpu_shares = Dict(
        {"notebook": 8192, "debug": 8192, "job": 1024},
        help="""CPU weight by workload kind (Docker's cpu_shares; 1024 is the default). It counts only
        when the CPU is contended, and the hard per-core limit stays: a person waiting for their
        notebook or debug session gets the CPU before batch jobs. The engine's own work (commits,
        builds) runs outside every container; its weight is set where the engine starts
        (start_engine in ./labdeck). Kinds not listed keep the default.""",
    ).tag(config=True)

    interactive_kinds = List(
        Unicode(),
        ["notebook", "debug"],
        help="""Workload kinds someone sits waiting for: on the hub's own engine they run under
        CpuGroups.interactive_group, ahead of the engine's long operations and of batch work.""",
    ).tag(config=True)

    def cgroup_parent(self, host: Host, kind: str) -> str:
        """The cgroup a container of this kind runs under on this host ("": Docker's own)."""
        if not host.is_local or kind not in self.interactive_kinds:
            return ""
        return self.cpu_groups.interactive_parent()

    @cached_property
    def cpu_groups(self) -> CpuGroups:
        return CpuGroups(parent=self)

    def capabilities_for(self, image_labels: dict | None) -> list[str]:
        """Capabilities the image declares it needs, all of which must be allowed."""
        wanted = [c.strip().upper() for c in (image_labels or {}).get(CAPABILITIES_LABEL, "").split(",") if c.strip()]
        refused = [c for c in wanted if c not in self.allowed_capabilities]
        if refused:
            raise RecipeError(
                f"the image asks for capabilities labdeck does not grant: {', '.join(refused)}"
            )
        return wanted

    def gpu_settings(self, host: Host, placement: Placement) -> tuple[dict, list]:
        """(environment, device requests) for the GPUs a placement holds."""
        if not placement.gpus:
            # 'void' hides every GPU even from images whose own env says NVIDIA_VISIBLE_DEVICES=all
            return {"NVIDIA_VISIBLE_DEVICES": "void"}, []
        ids = [g.device_id for g in placement.gpus]
        env = {
            "NVIDIA_VISIBLE_DEVICES": ",".join(ids if host.gpu_source == GPU_SOURCE_DETECTED
                                               else [str(g.index) for g in placement.gpus]),
            "LABDECK_GPU_INDICES": ",".join(str(i) for i in placement.gpu_indices),
            "LABDECK_GPU_MODEL": placement.gpu_model or "",
        }
        if host.gpu_source != GPU_SOURCE_DETECTED:
            return env, []  # declared inventory: no device exists to request
        return env, [DeviceRequest(driver="nvidia", device_ids=ids, capabilities=[["gpu"]])]

    def build(self, *, name: str, image: str, image_labels: dict | None, host: Host,
              placement: Placement, labels: dict[str, str], mounts: list[Mount] | tuple = (),
              env: dict | None = None, command=None, ports: dict[int, int | None] | None = None,
              working_dir: str | None = None, entrypoint: list[str] | None = None,
              user: str | None = None) -> ContainerSpec:
        """Create arguments for one workload container.

        ``ports`` maps container port -> host port (None: any free port) published on the
        host's address.
        """
        gpu_env, device_requests = self.gpu_settings(host, placement)
        cores = placement.cpu_milli / 1000
        threads = str(max(1, int(cores)))
        environment = {
            "LABDECK_WORKLOAD_ID": placement.workload_id,
            "LABDECK_CPU": f"{cores:g}",
            "LABDECK_MEMORY_GB": f"{placement.memory_mb / 1024:g}",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            **gpu_env,
            **(env or {}),
        }
        host_config = {
            "mem_limit": f"{placement.memory_mb}m",
            "memswap_limit": f"{placement.memory_mb}m",  # no swap beyond the limit
            "cpu_period": 100_000,
            "cpu_quota": max(1000, placement.cpu_milli * 100),
            "cpu_shares": int(self.cpu_shares.get(labels.get("labdeck.kind", ""), 1024)),
            "pids_limit": self.pids_limit,
            "shm_size": f"{max(64, min(self.shm_size_mb, placement.memory_mb // 2))}m",
            "cap_drop": ["ALL"],
            "cap_add": self.capabilities_for(image_labels) or None,
            "security_opt": ["no-new-privileges:true"],
            "privileged": False,
            "init": True,
            "network_mode": self.network,
            "mounts": [
                DockerMount(target=m.container_path, source=m.host_path, type="bind", read_only=m.read_only,
                            propagation=m.propagation or None)
                for m in mounts
            ],
            "device_requests": device_requests or None,
            "auto_remove": False,  # keep the exit status until the platform has read it
        }
        if parent := self.cgroup_parent(host, labels.get("labdeck.kind", "")):
            host_config["cgroup_parent"] = parent
        create_kwargs = {"environment": environment, "detach": True}
        if ports:
            host_config["port_bindings"] = {p: (host.address, hp) if hp else (host.address,) for p, hp in ports.items()}
            create_kwargs["ports"] = list(ports)
        if command is not None:
            create_kwargs["command"] = command
        if working_dir:
            create_kwargs["working_dir"] = working_dir
        if entrypoint is not None:
            create_kwargs["entrypoint"] = entrypoint
        if user:
            create_kwargs["user"] = user
        return ContainerSpec(name=name, image=image, create_kwargs=create_kwargs,
                             host_config=host_config, labels=dict(labels))
