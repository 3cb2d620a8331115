"""A second, real Docker engine for the tests of maintained hosts: its own dockerd with its own
socket, data and exec directories, and its own Linux bridge (so its containers have networking
without touching the first engine's docker0 or iptables rules). Needs root, as CI has."""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker


class SecondEngine:
    def __init__(self):
        # short paths: a unix socket path must stay under 108 bytes
        self.root = Path(tempfile.mkdtemp(prefix="ldk-e2-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.bridge = f"ldk{secrets.token_hex(3)}"  # interface names: at most 15 characters
        self.subnet = f"10.213.{secrets.randbelow(200) + 20}"
        self.proc = None

    def _run(self, *cmd):
        subprocess.run(cmd, check=True, capture_output=True)

    def start(self, timeout: float = 60) -> None:
        if os.geteuid() != 0 or not shutil.which("dockerd"):
            raise RuntimeError("a second Docker engine needs root and dockerd (./labdeck test installs docker.io)")
        self._run("ip", "link", "add", self.bridge, "type", "bridge")
        self._run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        self._run("ip", "link", "set", self.bridge, "up")
        self.log = open(self.root / "dockerd.log", "wb")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.url, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
             "--bridge", self.bridge, "--iptables=false", "--ip-masq=false"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                docker.APIClient(base_url=self.url, timeout=5).ping()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the second dockerd did not start:\n{self.log_tail()}")
                time.sleep(0.3)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.url, timeout=120)

    def load_image(self, reference: str) -> None:
        """Copy an image from the first engine (no registry needed)."""
        save = subprocess.Popen(["docker", "save", reference], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.url, "load", "-q"], stdin=save.stdout, check=True,
                       capture_output=True, timeout=600)
        save.stdout.close()
        if save.wait(60) != 0:
            raise RuntimeError(f"docker save {reference} failed")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                client = self.client()
                for c in client.containers.list(all=True):
                    c.remove(force=True)
                client.close()
            except Exception:
                pass
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
