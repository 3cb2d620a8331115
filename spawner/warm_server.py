"""One warm server of the pool (spawner/warm_pool.py): its container and folders, its claim,
and their removal.

A warm server is a container made by the one recipe that runs ``labdeck-standby``
(images/notebook/) with two host folders under ``data/warm-pool/``: a slot at
/home/jovyan/work (``rslave``, so the user's folder mounted onto it later arrives in the
running container) and a control folder, only the host's, holding the activation socket.
"""

import asyncio
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from docker.errors import DockerException

from services.ledger import Placement
from services.naming import new_workload_id
from services.paths import Mount
from services.recipe import POOL_LABEL, workload_labels

from . import bind_mounts
from .server_address import ports_to_publish, server_address

KIND = "notebook"
WORK = "/home/jovyan/work"
CONTROL = "/run/labdeck-standby"
SOCKET = "activate.sock"
STANDBY = "standby"  # its POOL_LABEL value, from its creation on (labels cannot change)


class WarmPoolError(Exception):
    """A claim that did not give the user a running server (the start goes cold instead)."""


@dataclass(frozen=True)
class WarmServer:
    workload_id: str  # also its container's labdeck.id and the name of its folders
    host: str
    container_id: str
    ip: str
    port: int
    secret: str
    slot: str  # host folder at /home/jovyan/work until the user's folder is mounted onto it
    control: str  # host folder at /run/labdeck-standby, holding the activation socket


@dataclass(frozen=True)
class Claim:
    """The connection to a claimed server, which says when the server accepts connections."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()

    async def listening(self, timeout: float) -> bool:
        """Whether the server said it listens within ``timeout`` (False: poll it instead)."""
        try:
            return await asyncio.wait_for(self.reader.readline(), timeout) == b"listening\n"
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            self.writer.close()


@dataclass(frozen=True)
class Blueprint:
    """What every warm server of a pool is made with."""

    image: str
    cpu_milli: int
    memory_mb: int
    port: int  # the single-user server's port inside the container
    uid: int  # owner of its folders: the image's user
    gid: int
    timeout: float  # seconds it may take to be ready for a claim


async def create(platform, host, blueprint: Blueprint) -> WarmServer:
    """Start one warm server on ``host`` and wait until it waits for a claim."""
    b = blueprint
    workload_id = new_workload_id("nb")
    slot, control = str(pool_dir(platform) / "slots" / workload_id), str(pool_dir(platform) / "control" / workload_id)
    await asyncio.to_thread(_make_folders, (slot, control), b.uid, b.gid)
    secret = secrets.token_urlsafe(32)
    placement = Placement(workload_id, host.name, host.region, b.cpu_milli, b.memory_mb, None, ())
    labels = workload_labels(platform.instance, workload_id=workload_id, kind=KIND, user="", placement=placement)
    labels[POOL_LABEL] = STANDBY
    image_info = await platform.docker.call(host.name, "inspect_image", b.image)
    spec = platform.recipe.build(
        name=f"{platform.instance}-warm-{workload_id}", image=b.image,
        image_labels=(image_info.get("Config") or {}).get("Labels"), host=host, placement=placement,
        labels=labels, env={"LABDECK_STANDBY_SECRET": secret}, command=["labdeck-standby"],
        ports=ports_to_publish(host, b.port),
        mounts=[Mount(slot, WORK, False, "warm-pool", propagation="rslave"),
                Mount(control, CONTROL, False, "warm-pool")],
    )
    container_id = None
    try:
        container_id = await platform.docker.run(host.name, spec.create)
        await platform.docker.call(host.name, "start", container_id)
        info = await platform.docker.call(host.name, "inspect_container", container_id)
        ip, port = _address(platform, host, info, b.port)
        await _wait_until_waiting(platform, host.name, container_id, os.path.join(control, SOCKET), b.timeout)
    except BaseException:
        if container_id:
            await remove_container(platform, host.name, container_id)
        await asyncio.to_thread(release, platform, workload_id)
        raise
    return WarmServer(workload_id, host.name, container_id, ip, port, secret, slot, control)


def _address(platform, host, info: dict, port: int) -> tuple[str, int]:
    address = server_address(host, info, platform.recipe.network, port)
    if address is None:
        raise WarmPoolError(f"no address on network {platform.recipe.network!r} and no published port")
    return address


def _make_folders(folders: tuple[str, str], uid: int, gid: int) -> None:
    for folder, mode in zip(folders, (0o755, 0o700)):  # the slot, the control folder
        os.mkdir(folder, mode)
        os.chown(folder, uid, gid)


async def _wait_until_waiting(platform, host_name: str, container_id: str, socket_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    next_inspect = time.monotonic() + 1.0
    while not os.path.exists(socket_path):
        if time.monotonic() > deadline:
            raise WarmPoolError(f"not ready within {timeout:g} s")
        if time.monotonic() > next_inspect:
            next_inspect = time.monotonic() + 1.0
            info = await platform.docker.call(host_name, "inspect_container", container_id)
            if not info["State"]["Running"]:
                logs = await platform.docker.call(host_name, "logs", container_id, tail=3)
                raise WarmPoolError(f"exited: {logs.decode('utf-8', 'replace').strip()}")
        await asyncio.sleep(0.1)


async def claim(warm: WarmServer, home: str | None, env: dict, argv: list[str]) -> Claim:
    """Mount ``home`` (a host folder, or None) and hand the server its user's environment."""
    if home:
        await asyncio.to_thread(bind_mounts.bind, home, warm.slot)
    try:
        reader, writer = await asyncio.open_unix_connection(os.path.join(warm.control, SOCKET))
    except OSError as e:
        raise WarmPoolError(f"no answer from the warm server: {e}") from e
    try:
        message = {"secret": warm.secret, "env": env, "argv": argv, "home_mounted": bool(home)}
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), timeout=10))
    except (OSError, ValueError, asyncio.TimeoutError) as e:
        writer.close()
        raise WarmPoolError(f"no answer from the warm server: {e}") from e
    if not answer.get("ok"):
        writer.close()
        raise WarmPoolError(answer.get("error") or "refused")
    return Claim(reader, writer)


async def remove(platform, warm: WarmServer) -> None:
    """Remove a warm server that will not be used (claimed for nothing, or refused)."""
    await remove_container(platform, warm.host, warm.container_id)
    await asyncio.to_thread(release, platform, warm.workload_id)


async def remove_container(platform, host_name: str, container_id: str) -> None:
    try:
        await platform.docker.call(host_name, "remove_container", container_id, force=True)
    except (DockerException, OSError) as e:
        platform.log.warning("Warm server pool: could not remove container %s: %s", container_id[:12], e)


def release(platform, workload_id: str) -> None:
    """After the container of a warm server ended: unmount its slot, remove its folders.
    Needs no pool: the hub may have restarted with the pool off."""
    for sub in ("slots", "control"):
        remove_folder(str(pool_dir(platform) / sub / workload_id))


def pool_dir(platform) -> Path:
    # without links: the mount table names mount points by their real paths, and a slot must be
    # recognised there before its folder is removed
    return Path(os.path.realpath(platform.data_dir)) / "warm-pool"


def list_containers(client, instance: str) -> list[dict]:
    """Every warm server of the instance on one engine, claimed or not, running or not."""
    return client.containers(all=True, filters={"label": [f"labdeck.instance={instance}", f"{POOL_LABEL}={STANDBY}"]})


def remove_folder(folder: str) -> None:
    """Remove a pool folder, unmounting the user's folder from it first. Never removes through
    a mount: if anything is still mounted there, it stays."""
    if not os.path.lexists(folder):
        return
    folder = os.path.join(os.path.realpath(os.path.dirname(folder)), os.path.basename(folder))
    if bind_mounts.is_mount_point(folder):
        bind_mounts.unbind(folder)
    mounts = bind_mounts.current_mounts()
    if any(m.mount_point == folder or m.mount_point.startswith(folder + "/") for m in mounts):
        raise bind_mounts.MountError(16, f"{folder} is still a mount point; left in place")
    shutil.rmtree(folder)
