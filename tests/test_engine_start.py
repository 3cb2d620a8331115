"""The Docker engine that ./labdeck (and .ci/run, through it) starts runs in a
cgroup of its own that weighs a quarter of the group of all containers, so the engine's long
operations (commit, build) yield the CPU to starting containers. Run with stand-in
dockerd/docker programs: the real engine is in use."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.hubtools import REPO


def start_engine(env: dict, log: Path, seconds: int) -> subprocess.CompletedProcess:
    """labdeck's start_engine function, as .ci/run calls it (sourcing the script)."""
    return subprocess.run(["bash", "-c", f'source "{REPO / "labdeck"}" && start_engine "{log}" {seconds}'],
                          env=env, capture_output=True, text=True, timeout=30)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starting an engine and making cgroups needs root")


def fake_tools(tmp_path: Path) -> Path:
    """`dockerd` records its cgroups and waits; `docker info` answers once dockerd has started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dockerd").write_text(
        f"#!/bin/sh\necho $$ > {tmp_path}/pid\ncat /proc/self/cgroup > {tmp_path}/cgroup\nexec sleep 60\n")
    (bin_dir / "docker").write_text(f"#!/bin/sh\ntest -s {tmp_path}/cgroup\n")
    for tool in ("dockerd", "docker"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def cgroup_dir(record: str) -> Path:
    """The cpu-controller cgroup directory named in a /proc/PID/cgroup record."""
    for line in record.splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return Path("/sys/fs/cgroup/cpu") / path.lstrip("/")
    # cgroup v2: the one unified line "0::/path"
    path = next(line.split(":", 2)[2] for line in record.splitlines() if line.startswith("0::"))
    return Path("/sys/fs/cgroup") / path.lstrip("/")


def test_the_engine_weighs_a_quarter_of_all_containers(tmp_path):
    bin_dir = fake_tools(tmp_path)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = start_engine(env, tmp_path / "dockerd.log", 10)
    try:
        assert result.returncode == 0, result.stderr
        assert "default CPU weight" not in result.stdout + result.stderr
        group = cgroup_dir((tmp_path / "cgroup").read_text())
        assert group.name == "labdeck-engine"
        if (group / "cpu.shares").exists():
            assert int((group / "cpu.shares").read_text()) == 256  # the containers' /docker group: 1024
        else:
            assert int((group / "cpu.weight").read_text()) == 25  # default 100
    finally:
        pid = (tmp_path / "pid").read_text().strip() if (tmp_path / "pid").exists() else ""
        if pid:
            os.kill(int(pid), signal.SIGTERM)


def test_an_engine_that_never_answers_is_reported(tmp_path):
    bin_dir = fake_tools(tmp_path)
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "dockerd").write_text("#!/bin/sh\necho 'failed to start daemon: no space left' >&2\nexit 1\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = start_engine(env, tmp_path / "dockerd.log", 2)
    assert result.returncode == 1
    assert "failed to start daemon: no space left" in result.stderr  # the log's end is shown
    assert "did not answer within 2 s" in result.stderr
