"""Per-user limits on what one person may hold at once, with per-group overrides.

    c.Quotas.default = {"cpu": 4, "memory_gb": 16, "gpus": 1}
    c.Quotas.groups = {"vision-lab": {"gpus": 4, "memory_gb": 64}}
    c.Quotas.users = {"alice": {"cpu": 16}}

A user in several groups gets, per resource, the most generous of their groups' values;
an entry in ``users`` wins over groups.
"""

from dataclasses import dataclass

from traitlets import Dict, TraitError, validate
from traitlets.config import LoggingConfigurable

from .identity import Requester

RESOURCES = ("cpu", "memory_gb", "gpus")


@dataclass(frozen=True)
class Limits:
    cpu_milli: int
    memory_mb: int
    gpus: int

    @property
    def cpu(self) -> float:
        return self.cpu_milli / 1000

    @property
    def memory_gb(self) -> float:
        return self.memory_mb / 1024


def _check_entry(where: str, entry) -> dict:
    if not isinstance(entry, dict):
        raise TraitError(f"{where} must be a dict like {{'cpu': 4, 'memory_gb': 16, 'gpus': 1}}")
    for key, value in entry.items():
        if key not in RESOURCES:
            raise TraitError(f"{where}: unknown resource {key!r}; use {', '.join(RESOURCES)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise TraitError(f"{where}.{key} must be a number >= 0")
    return entry


class Quotas(LoggingConfigurable):
    default = Dict(
        {"cpu": 4, "memory_gb": 16, "gpus": 1},
        help="Limits for every user: total CPU cores, memory (GB) and GPUs held at once.",
    ).tag(config=True)

    groups = Dict(
        help="Per-group (department) overrides: {group: {resource: limit}}; the most generous group wins.",
    ).tag(config=True)

    users = Dict(
        help="Per-user overrides: {user: {resource: limit}}; these win over groups.",
    ).tag(config=True)

    request_defaults = Dict(
        {"cpu": 1, "memory_gb": 2, "gpus": 0},
        help="What a request gets for cpu, memory_gb and gpus when it leaves them out (API calls).",
    ).tag(config=True)

    @validate("default", "request_defaults")
    def _check_default(self, proposal):
        entry = _check_entry(f"Quotas.{proposal.trait.name}", proposal.value)
        return {**dict.fromkeys(RESOURCES, 0), **entry}

    @validate("groups", "users")
    def _check_overrides(self, proposal):
        for name, entry in proposal.value.items():
            _check_entry(f"Quotas.{proposal.trait.name}[{name!r}]", entry)
        return proposal.value

    def limits_for(self, requester: Requester) -> Limits:
        merged = {k: self.default.get(k, 0) for k in RESOURCES}
        from_groups: dict[str, float] = {}
        for group in sorted(requester.groups):
            for key, value in self.groups.get(group, {}).items():
                from_groups[key] = max(from_groups.get(key, 0), value)
        merged.update(from_groups)
        merged.update(self.users.get(requester.name, {}))
        return Limits(
            cpu_milli=int(round(merged["cpu"] * 1000)),
            memory_mb=int(round(merged["memory_gb"] * 1024)),
            gpus=int(merged["gpus"]),
        )
