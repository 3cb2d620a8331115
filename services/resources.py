"""Regions, hosts and their capacity: CPU, memory and GPUs (model and index).

Configured once in jupyterhub_config.py::

    c.Resources.hosts = [
        {"name": "local", "region": "default", "docker_url": "unix:///var/run/docker.sock",
         "cpus": 16, "memory_gb": 64, "gpus": {"A100": 2}},
    ]

``gpus`` is ``"detect"`` (nvidia-smi on this machine, local engines only), a declared
inventory ``{"A100": 2, "T4": 1}`` (indices numbered in that order) or a list
``[{"index": 0, "model": "A100", "id": "GPU-..."}]``. A declared inventory stands in
where there is no GPU: indices are allocated and exported, but no device is requested.
"""

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from functools import cached_property

from docker.errors import DockerException
from traitlets import Dict, Float, List, TraitError, validate
from traitlets.config import LoggingConfigurable

from .docker_pool import DEFAULT_DOCKER_URL, make_client

GPU_SOURCE_DECLARED = "declared"
GPU_SOURCE_DETECTED = "detected"


@dataclass(frozen=True)
class Gpu:
    index: int
    model: str
    device_id: str  # what Docker's device request names (UUID when detected, else the index)


@dataclass(frozen=True)
class Host:
    name: str
    region: str
    docker_url: str
    tls: dict | None
    address: str  # where ports published by containers on this host are reached
    cpus: float
    memory_mb: int
    gpus: tuple[Gpu, ...]
    gpu_source: str  # declared | detected
    online: bool = True  # answered its last probe
    drained: bool = False  # takes no new workloads (running ones continue)

    @property
    def is_local(self) -> bool:
        return self.docker_url.startswith("unix://")

    def gpus_of(self, model: str) -> list[Gpu]:
        return [g for g in self.gpus if g.model == model]

    @property
    def gpu_models(self) -> list[str]:
        return sorted({g.model for g in self.gpus})


def detect_gpus() -> list[Gpu]:
    """GPUs of this machine according to nvidia-smi (empty when there is none)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,uuid", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_nvidia_smi(out: str) -> list[Gpu]:
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        model = parts[1].removeprefix("NVIDIA ").strip()
        gpus.append(Gpu(index=int(parts[0]), model=model, device_id=parts[2]))
    return gpus


GPU_ITEM_RE = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9 ._-]{0,63}?)\s*[:x×=]\s*(\d{1,3})\s*")


def parse_gpu_inventory(text: str) -> dict[str, int]:
    """``"A100: 4, T4: 2"`` (the add-host form) -> ``{"A100": 4, "T4": 2}``."""
    inventory: dict[str, int] = {}
    for item in filter(str.strip, text.split(",")):
        match = GPU_ITEM_RE.fullmatch(item)
        if not match or int(match.group(2)) < 1:
            raise ValueError(f"'{item.strip()[:64]}' is not MODEL: COUNT; write e.g. A100: 4, T4: 2")
        model = match.group(1).strip()
        if model in inventory:
            raise ValueError(f"{model} is listed twice")
        inventory[model] = int(match.group(2))
    return inventory


def declared_gpus(spec) -> list[Gpu]:
    """Turn ``{"A100": 2}`` or ``[{"index":..., "model":...}]`` into GPUs."""
    if isinstance(spec, dict):
        gpus, index = [], 0
        for model, count in spec.items():
            for _ in range(int(count)):
                gpus.append(Gpu(index=index, model=str(model), device_id=str(index)))
                index += 1
        return gpus
    gpus = []
    for item in spec or []:
        index = int(item["index"])
        gpus.append(Gpu(index=index, model=str(item["model"]), device_id=str(item.get("id", index))))
    return gpus


class Resources(LoggingConfigurable):
    """The hosts labdeck places workloads on, grouped into regions."""

    hosts = List(
        Dict(),
        help="""Docker hosts, each a dict:
        name, region, docker_url ("unix:///var/run/docker.sock" or "tcp://host:2376"),
        tls ({"ca":..., "cert":..., "key":...} for tcp), address (where published ports are
        reached; default 127.0.0.1 for local engines, else the tcp host), cpus and memory_gb
        (default: what the engine reports), gpus ("detect", {"A100": 2} or a list).
        Default: the local engine as host "local" in region "default".
        """,
    ).tag(config=True)

    region_titles = Dict(
        help="Display names of regions, e.g. {'east': 'East campus (A100)'}.",
    ).tag(config=True)

    reload_interval = Float(
        1.0,
        help="""Seconds between looks at the hosts table for changes (hosts added, drained or
        probed from the admin page, possibly by the other process).""",
    ).tag(config=True)

    _stamp = None
    _checked = 0.0
    _merged: dict = {}

    def _local_only_hosts(self):
        return [{"name": "local", "region": "default", "docker_url": DEFAULT_DOCKER_URL, "gpus": "detect"}]

    @validate("hosts")
    def _check_hosts(self, proposal):
        names = set()
        for i, h in enumerate(proposal.value):
            for key in ("name", "region"):
                if not isinstance(h.get(key), str) or not h.get(key):
                    raise TraitError(f"Resources.hosts[{i}] needs a '{key}'")
            if h["name"] in names:
                raise TraitError(f"Resources.hosts: duplicate host name {h['name']!r}")
            names.add(h["name"])
        return proposal.value

    @cached_property
    def _config_hosts(self) -> dict[str, Host]:
        specs = self.hosts or self._local_only_hosts()
        return {spec["name"]: self._resolve(spec) for spec in specs}

    @property
    def _hosts(self) -> dict[str, Host]:
        """Config hosts with their recorded state, then hosts added by admins (see services.hosts)."""
        now = time.monotonic()
        if now - self._checked >= self.reload_interval or self._stamp is None:
            self._checked = now
            records, stamp = self._records()
            if stamp != self._stamp:
                self._merged, self._stamp = self._merge(records), stamp
        return self._merged

    def invalidate(self) -> None:
        """Look at the hosts table again on the next question (this process changed it)."""
        self._checked = 0.0
        self._stamp = None

    def _records(self):
        db = getattr(self.parent, "db", None)
        if db is None:
            return [], ()
        from .models import HostRecord

        with db.read() as s:
            records = [(r.name, r.origin, r.region, r.docker_url, r.tls, r.address, r.gpus, r.cpus, r.memory_mb,
                        r.drained, r.reachable) for r in s.query(HostRecord).order_by(HostRecord.created_at)]
        return records, tuple(records)

    def _merge(self, records) -> dict[str, Host]:
        hosts = dict(self._config_hosts)
        for name, origin, region, url, tls, address, gpus, cpus, memory_mb, drained, reachable in records:
            if origin == "config":
                if name in hosts:  # a record of a host since removed from the config is ignored
                    hosts[name] = replace(hosts[name], drained=drained, online=reachable)
                continue
            if name in hosts:
                continue  # the config wins over an added host of the same name
            hosts[name] = Host(
                name=name, region=region, docker_url=url, tls=tls,
                address=address or ("127.0.0.1" if url.startswith("unix://") else url.split("//")[-1].rsplit(":", 1)[0]),
                cpus=float(cpus or 0), memory_mb=int(memory_mb or 0), gpus=tuple(declared_gpus(gpus or {})),
                gpu_source=GPU_SOURCE_DECLARED, online=reachable, drained=drained)
        return hosts

    def _resolve(self, spec: dict) -> Host:
        docker_url = spec.get("docker_url", DEFAULT_DOCKER_URL)
        cpus, memory_mb, online = spec.get("cpus"), None, True
        if spec.get("memory_gb") is not None:
            memory_mb = int(float(spec["memory_gb"]) * 1024)
        if cpus is None or memory_mb is None:
            try:
                info = make_client(docker_url, spec.get("tls"), timeout=10).info()
                cpus = cpus if cpus is not None else info["NCPU"]
                memory_mb = memory_mb if memory_mb is not None else info["MemTotal"] // 2**20
            except (DockerException, OSError) as e:
                self.log.warning("Host %s (%s) does not answer: %s", spec["name"], docker_url, e)
                cpus, memory_mb, online = cpus or 0, memory_mb or 0, False
        gpu_spec = spec.get("gpus", "detect")
        if gpu_spec == "detect":
            gpus = detect_gpus() if docker_url.startswith("unix://") else []
            source = GPU_SOURCE_DETECTED
        else:
            gpus, source = declared_gpus(gpu_spec), GPU_SOURCE_DECLARED
        address = spec.get("address")
        if not address:
            address = "127.0.0.1" if docker_url.startswith("unix://") else docker_url.split("//")[-1].split(":")[0]
        return Host(
            name=spec["name"], region=spec["region"], docker_url=docker_url, tls=spec.get("tls"),
            address=address, cpus=float(cpus), memory_mb=int(memory_mb), gpus=tuple(gpus),
            gpu_source=source, online=online,
        )

    # ---- queries ----

    def all_hosts(self) -> list[Host]:
        return list(self._hosts.values())

    def host(self, name: str) -> Host:
        try:
            return self._hosts[name]
        except KeyError:  # perhaps added by the other process a moment ago
            self.invalidate()
            return self._hosts[name]

    def regions(self) -> list[str]:
        seen = []
        for h in self._hosts.values():
            if h.region not in seen:
                seen.append(h.region)
        return seen

    def region_title(self, region: str) -> str:
        return self.region_titles.get(region, region)

    def hosts_in(self, region: str) -> list[Host]:
        return [h for h in self._hosts.values() if h.region == region]

    def gpu_models(self, region: str) -> list[str]:
        return sorted({m for h in self.hosts_in(region) for m in h.gpu_models})
