"""The one validator of workload options.

Raw input from a form or a JSON body becomes a typed :class:`WorkloadRequest`, or an
:class:`~services.errors.OptionError` whose message names the field and the limit.
Notebooks, debug sessions and jobs all come through here; nothing is created or
allocated before it passes.
"""

import math
import re
from dataclasses import dataclass, field

from .errors import OptionError
from .identity import Requester
from .images import ImageChoice
from .paths import Mount

COMMON_FIELDS = ("image", "region", "cpu", "memory_gb", "gpus", "gpu_model", "mounts")
TASK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MIN_CPU_MILLI = 100
MIN_MEMORY_MB = 256


@dataclass(frozen=True)
class ResourceRequest:
    region: str
    cpu_milli: int
    memory_mb: int
    gpu_count: int = 0
    gpu_model: str | None = None
    time_limit_s: int | None = None  # None: open-ended (notebooks, debug sessions, jobs without a limit)


@dataclass(frozen=True)
class WorkloadRequest:
    kind: str
    image: ImageChoice
    resources: ResourceRequest
    mounts: tuple[Mount, ...]
    extra: dict = field(default_factory=dict)  # kind-specific fields, checked by their module

    def as_options(self) -> dict:
        """The normalized options, as stored and used to pre-fill the next form."""
        r = self.resources
        return {
            "image": self.image.name,
            "region": r.region,
            "cpu": r.cpu_milli / 1000,
            "memory_gb": r.memory_mb / 1024,
            "gpus": r.gpu_count,
            "gpu_model": r.gpu_model or "",
            "mounts": [
                {"host_path": m.host_path, "container_path": m.container_path, "read_only": m.read_only}
                for m in self.mounts
            ],
            **self.extra,
        }


def _number(raw, field_name: str, *, whole: bool = False) -> float:
    if isinstance(raw, bool):
        raise OptionError(field_name, "must be a number")
    if isinstance(raw, str):
        raw = raw.strip()
        if not raw:
            raise OptionError(field_name, "is required")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise OptionError(field_name, f"must be a {'whole ' if whole else ''}number") from None
    if not math.isfinite(value):
        raise OptionError(field_name, "must be a finite number")
    if whole and value != int(value):
        raise OptionError(field_name, "must be a whole number")
    return value


def _fmt(value: float) -> str:
    return f"{value:g}"


def _plural(value: float, unit: str) -> str:
    return f"{_fmt(value)} {unit}{'' if value == 1 else 's'}"


def validate_request(platform, requester: Requester, kind: str, raw, extra_fields=()) -> WorkloadRequest:
    """Check ``raw`` (form or JSON options) for a workload of ``kind`` by ``requester``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionError("options", "must be an object of option names to values")
    allowed = set(COMMON_FIELDS) | set(extra_fields)
    for key in raw:
        if key not in allowed:
            raise OptionError(str(key)[:64], f"unknown option; allowed: {', '.join(sorted(allowed))}")

    resources = platform.resources
    quotas = platform.quotas
    defaults = quotas.request_defaults
    limits = quotas.limits_for(requester)

    image = _image(platform, requester, kind, raw.get("image"))
    region = check_region(resources, raw.get("region"))
    hosts = [h for h in resources.hosts_in(region) if h.online]
    if not hosts:
        raise OptionError("region", f"no host of region '{region}' is online now")

    cpu_milli = _amount(raw.get("cpu", defaults["cpu"]), "cpu", region, per_unit=1000, minimum=MIN_CPU_MILLI,
                        biggest=int(max(h.cpus for h in hosts) * 1000), quota=limits.cpu_milli,
                        show=lambda v: _plural(v, "core"))
    memory_mb = _amount(raw.get("memory_gb", defaults["memory_gb"]), "memory_gb", region, per_unit=1024,
                        minimum=MIN_MEMORY_MB, biggest=max(h.memory_mb for h in hosts), quota=limits.memory_mb,
                        show=lambda v: f"{_fmt(round(v, 2))} GB")

    gpu_count = int(_number(raw.get("gpus", defaults["gpus"]), "gpus", whole=True))
    if gpu_count < 0:
        raise OptionError("gpus", "must be 0 or more")
    gpu_model = _gpu_model(resources, region, gpu_count, raw.get("gpu_model"))
    if gpu_count > limits.gpus:
        raise OptionError("gpus", f"{_plural(gpu_count, 'GPU')} is more than your quota of {_plural(limits.gpus, 'GPU')}")
    if gpu_count:
        most = max(len(h.gpus_of(gpu_model)) for h in hosts)
        if gpu_count > most:
            raise OptionError(
                "gpus", f"{gpu_count} × {gpu_model} do not fit on one host in region '{region}' (at most {most} per host)"
            )

    mounts = platform.paths.check_mappings(requester, raw.get("mounts"))
    extra = {k: raw[k] for k in extra_fields if k in raw}
    return WorkloadRequest(
        kind=kind,
        image=image,
        resources=ResourceRequest(region, cpu_milli, memory_mb, gpu_count, gpu_model),
        mounts=tuple(mounts),
        extra=extra,
    )


def _amount(raw, field: str, region: str, *, per_unit: int, minimum: int, biggest: int, quota: int, show) -> int:
    """A CPU (milli-cores) or memory (MB) request: at least ``minimum``, at most what the
    biggest host of the region has and what the user's quota allows."""
    value = _number(raw, field)
    amount = int(round(value * per_unit))
    if amount < minimum:
        raise OptionError(field, f"must be at least {show(minimum / per_unit)}")
    if amount > biggest:
        raise OptionError(field, f"{show(value)} is more than any host in region '{region}' has ({show(biggest / per_unit)})")
    if amount > quota:
        raise OptionError(field, f"{show(value)} is more than your quota of {show(quota / per_unit)}")
    return amount


def _image(platform, requester, kind, raw) -> ImageChoice:
    if raw in (None, ""):
        offered = platform.catalog.images_for(requester, kind)
        if offered:
            return offered[0]
    return platform.catalog.check(requester, kind, raw)


def _one_of(field: str, raw, choices: list[str], not_offered: str) -> str:
    """``raw`` if it is one of ``choices``; the only choice when none was given."""
    if raw in (None, "") and len(choices) == 1:
        return choices[0]
    if not isinstance(raw, str) or raw not in choices:
        shown = "" if raw in (None, "") else f"'{str(raw)[:64]}' {not_offered}; "
        raise OptionError(field, f"{shown}choose one of: {', '.join(choices)}")
    return raw


def check_region(resources, raw) -> str:
    return _one_of("region", raw, resources.regions(), "is not a region")


def _gpu_model(resources, region, gpu_count, raw) -> str | None:
    if gpu_count == 0:
        return None
    models = resources.gpu_models(region)
    if not models:
        raise OptionError("gpus", f"region '{region}' offers no GPUs; choose 0")
    return _one_of("gpu_model", raw, models, f"is not offered in region '{region}'")


def check_task_name(raw) -> str:
    """The task name of a debug session or job: what the lists show."""
    if not isinstance(raw, str) or not TASK_NAME_RE.fullmatch(raw.strip()):
        raise OptionError("name", "give the task a name of 1-64 letters, digits, spaces, '.', '_' or '-'")
    return raw.strip()
