"""Where the benchmarks' CPU time went: the Docker engine's CPU weight, and per-process,
per-container and machine CPU seconds from Linux /proc and cgroup v1."""

import os
from pathlib import Path


def engine_cpu_weight() -> str:
    """The local Docker engine's CPU weight, as labdeck's start_engine set it (or did not):
    isolation and concurrent starts depend on it, so the benchmarks print it."""
    pids = [e.name for e in Path("/proc").iterdir() if e.name.isdigit() and _comm(e.name) == "dockerd"]
    if not pids:
        return "engine: no local dockerd process"
    for line in Path(f"/proc/{pids[0]}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(",") or controllers == "":
            base = Path("/sys/fs/cgroup/cpu") if controllers else Path("/sys/fs/cgroup")
            group = base / path.lstrip("/")
            for name in ("cpu.shares", "cpu.weight"):
                if (group / name).exists():
                    return f"engine: dockerd in cgroup {path or '/'}, {name} {(group / name).read_text().strip()}"
    return "engine: dockerd at the default CPU weight"


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


# ---- CPU accounting: where a batch's CPU time went (Linux /proc, cgroup v1) ----

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from "state" on (the name may hold spaces)


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def process_cpu(pids) -> float:
    """CPU seconds (user + system) the processes have used so far."""
    total = 0
    for pid in pids:
        if fields := _stat(pid):
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def docker_daemon_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if name in ("dockerd", "containerd") or name.startswith("containerd-shim"):
                pids.append(int(entry.name))
    return pids


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK, sum(fields[:8]) / TICK


def container_cpu(container_id: str) -> float:
    """CPU seconds a running container has used (cgroup v1 cpuacct; NaN where not found): in
    Docker's group, or under labdeck's group of notebooks and debug sessions (services/cpu_groups.py)."""
    for path in (f"/sys/fs/cgroup/{hierarchy}/{parent}/{container_id}/cpuacct.usage"
                 for hierarchy in ("cpuacct", "cpu,cpuacct") for parent in ("docker", "labdeck-interactive")):
        try:
            return int(Path(path).read_text()) / 1e9
        except OSError:
            continue
    return float("nan")


class CpuMeter:
    """CPU seconds used between :meth:`begin` and :meth:`end` by a hub, its proxy and its
    services (its child processes), the Docker daemons and the whole machine."""

    def __init__(self, hub):  # a tests.hubtools.HubProcess
        self.hub = hub

    def _parts(self) -> dict[str, list[int]]:
        parts = {"hub": [self.hub.proc.pid], "proxy": [], "service": []}
        for pid in tree(self.hub.proc.pid)[1:]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            parts["proxy" if "configurable-http-proxy" in cmd or "node" in cmd.split(" ")[0] else "service"].append(pid)
        return parts

    def _sample(self) -> dict:
        busy, total = machine_cpu()
        sample = {name: process_cpu(pids) for name, pids in self._parts().items()}
        sample.update(docker=process_cpu(docker_daemon_pids()), machine=busy, capacity=total)
        return sample

    def begin(self):
        self._start = self._sample()
        return self

    def end(self) -> dict:
        now = self._sample()
        return {k: now[k] - self._start.get(k, 0) for k in now}
