"""CPU weights of the hub and of the containers people wait for (Linux cgroups, v1 or v2).

Why: the engine's long operations (a ``docker commit`` of a big layer, an image build) run
inside dockerd and keep both cores of a small host busy. The engine already runs in a light
group of its own (start_engine in ./labdeck), yet under benchmarks/isolation.py's load a warm
start still waited for the CPU: the hub, at the root like every other process, and the
claimed server, inside Docker's one group of all containers (which weighs no more than one
root process). Measured with that load on 2 cores (our hub alone, 8 warm starts per phase, one
run each), loaded / unloaded: 1.66 with neither group (the hub's threads waited 0.13 s for a CPU
per start, the server 0.05 s), 1.38 with the hub's group alone, 1.18 with the servers' alone,
1.06 with both.

So the hub joins the platform group (the proxy and the labdeck service it starts inherit it), and
notebooks and debug sessions on the hub's own engine run under the interactive group, both
weighing ``CpuGroups.shares``. Jobs, builds and cache tasks stay in Docker's group (1024), so
the engine (256) keeps a quarter of their weight when batch work fills every core. While
notebooks and debug sessions fill every core (their CPU limits add up to the host's cores), the
engine weighs 1/32 of them and its work waits longer; a warm start needs none of it.
"""

import os
import threading
from pathlib import Path

from traitlets import Integer, Unicode
from traitlets.config import LoggingConfigurable

BACKGROUND_NICE = 10  # a thread at nice 10 weighs 110 against 1024 at nice 0
V1_DEFAULT_SHARES = 1024  # cgroup v1 cpu.shares of a plain process or group
V2_DEFAULT_WEIGHT = 100  # cgroup v2 cpu.weight of the same


class CpuGroups(LoggingConfigurable):
    platform_group = Unicode(
        "labdeck-platform",
        help="""cgroup the hub joins as it starts; the proxy and the labdeck service it starts
        inherit it. Empty: the hub stays where it was started.""",
    ).tag(config=True)

    interactive_group = Unicode(
        "labdeck-interactive",
        help="""Parent cgroup of notebook servers and debug sessions on the hub's own (unix
        socket) engine, when that engine manages cgroups itself (Docker's cgroupfs driver).
        Empty: they stay in Docker's group with every other container.""",
    ).tag(config=True)

    shares = Integer(
        8192,
        help="""CPU weight of both groups in cgroup v1 cpu.shares (a root process weighs 1024,
        Docker's group of all other containers 1024, the engine 256); cgroup v2 gets the same
        ratio as cpu.weight (shares * 100 / 1024). It counts only while the CPU is contended.""",
    ).tag(config=True)

    cgroup_root = Unicode("/sys/fs/cgroup", help="Where the cgroup file systems are mounted.").tag(config=True)

    def _dir(self, name: str) -> tuple[Path, str] | None:
        """(the group's folder, its weight file) in the cpu controller's hierarchy, or None."""
        root = Path(self.cgroup_root)
        if (root / "cpu" / "cpu.shares").exists():  # v1, cpu controller mounted on its own path
            return root / "cpu" / name, "cpu.shares"
        if (root / "cgroup.controllers").exists():  # v2 (unified)
            return root / name, "cpu.weight"
        return None

    def _weight(self, weight_file: str) -> str:
        if weight_file == "cpu.shares":
            return str(self.shares)
        return str(max(1, min(10000, self.shares * V2_DEFAULT_WEIGHT // V1_DEFAULT_SHARES)))

    def prepare(self, name: str) -> Path | None:
        """Create group ``name`` with the weight; its folder, or None where this machine does not allow it."""
        found = self._dir(name)
        if not name or found is None:
            return None
        group, weight_file = found
        try:
            if weight_file == "cpu.weight":
                control = Path(self.cgroup_root) / "cgroup.subtree_control"
                if "cpu" not in control.read_text().split():
                    control.write_text("+cpu")
            group.mkdir(exist_ok=True)
            (group / weight_file).write_text(self._weight(weight_file))
        except OSError as e:
            self.log.warning("CPU weight: cannot prepare cgroup %s (%s); it keeps the default weight", group, e)
            return None
        return group

    def join_platform_group(self, pid: int) -> bool:
        """Move process ``pid`` (all its threads) into the platform's group."""
        group = self.prepare(self.platform_group)
        if group is None:
            return False
        try:
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            self.log.warning("CPU weight: cannot join %s (%s); the hub runs at the default weight", group, e)
            return False
        return True

    def prepare_interactive(self, engine_cgroup_driver: str) -> str:
        """Prepare the interactive group for an engine with this cgroup driver; its parent path or ""."""
        if engine_cgroup_driver != "cgroupfs":
            # systemd's driver takes only "*.slice" parents, and weighs its own units
            self.log.info("CPU weight: the engine's cgroup driver is %r; servers stay in its group",
                          engine_cgroup_driver)
            return ""
        return self.interactive_parent() if self.prepare(self.interactive_group) else ""

    def interactive_parent(self) -> str:
        """Docker's cgroup_parent for notebooks and debug sessions on the local engine: the
        interactive group once prepared on this machine (by the hub), else ""."""
        found = self._dir(self.interactive_group) if self.interactive_group else None
        if found is None or not (found[0] / found[1]).exists():
            return ""
        return "/" + self.interactive_group


def in_the_background() -> None:
    """Lower the calling thread's CPU weight to BACKGROUND_NICE: for long work done by a
    process of the platform's group (a cache copy in the labdeck service), which would
    otherwise take the group's weight from the hub's and service's own requests."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, max(BACKGROUND_NICE, os.getpriority(os.PRIO_PROCESS, tid)))
    except (OSError, AttributeError):
        pass  # not Linux: threads have no priority of their own
