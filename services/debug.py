"""Remote-debug sessions: long-lived containers reached by SSH and in the browser.

A session is a workload of kind ``debug``: validated by the one option validator (plus its
own fields: task name, number of ports, password), placed by the ledger, given a contiguous
range of host ports (port 1 is SSH, the others are published to the same container ports),
and run from the one container recipe. The password reaches the container only as a crypt
hash; the clear text is never stored, logged or passed to Docker.
"""

import asyncio
import secrets
from dataclasses import dataclass, replace

from docker.errors import APIError, DockerException, NotFound
from sqlalchemy import select
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Integer, Unicode
from traitlets.config import LoggingConfigurable

from .errors import OptionError
from .identity import Requester
from .models import DebugSession, Workload, WorkloadState
from .options import check_task_name, validate_request
from .ports import allocate_ports, port_label
from .recipe import workload_labels
from .repository import ensure_image
from .ssh_password import check_password, crypt_hash
from .workloads import end_workload, ended_for_deletion, mark_running, open_workload

KIND = "debug"
EXTRA_FIELDS = ("name", "ports", "password")
JUPYTER_PORT = 8888


class DebugSessions(LoggingConfigurable):
    """Settings of remote-debug sessions."""

    # Below Linux's ephemeral range (32768-60999), from which Docker picks the host ports it publishes
    # for other containers (a notebook's) and the kernel picks client ports: a pool inside it
    # finds ports taken by chance.
    port_pool_first = Integer(30000, help="First host port handed out to sessions.").tag(config=True)
    port_pool_last = Integer(30999, help="Last host port handed out to sessions.").tag(config=True)
    max_ports = Integer(10, help="Most ports one session may ask for (SSH included).").tag(config=True)
    ssh_user = Unicode("jovyan", help="The image's user that SSH logins land in.").tag(config=True)
    container_ssh_port = Integer(22, help="Port sshd listens on inside the container.").tag(config=True)
    ssh_host = Unicode(
        "", help="Host name shown in the 'ssh -p PORT user@HOST' command; default: the host's address."
    ).tag(config=True)
    start_timeout = Integer(90, help="Seconds for sshd to answer before the start counts as failed.").tag(config=True)


@dataclass(frozen=True)
class DebugRequest:
    workload: object  # services.options.WorkloadRequest
    name: str
    port_count: int
    password: str  # clear text, in memory only until hashed


def validate_debug(platform, requester: Requester, raw) -> DebugRequest:
    """The shared validation plus the session's own fields."""
    request = validate_request(platform, requester, KIND, raw, extra_fields=EXTRA_FIELDS)
    extra = request.extra
    name = check_task_name(extra.get("name"))
    settings = platform.debug
    raw_ports = extra.get("ports", 1)
    try:
        port_count = int(str(raw_ports).strip())
    except ValueError:
        raise OptionError("ports", "must be a whole number") from None
    if not 1 <= port_count <= settings.max_ports:
        raise OptionError("ports", f"must be between 1 and {settings.max_ports} (port 1 is SSH)")
    password = extra.get("password")
    if not isinstance(password, str) or not password:
        raise OptionError("password", "choose a password for SSH logins")
    check_password(password)
    # the password stays out of the stored options
    clean = replace(request, extra={"name": name, "ports": port_count})
    return DebugRequest(clean, name, port_count, password)


def _open(platform, requester: Requester, debug: DebugRequest, password_hash: str):
    settings = platform.debug
    holder = {}

    def hold(session, workload, placement):
        host = platform.resources.host(placement.host)
        ports = allocate_ports(session, host=host, workload_id=workload.id, count=debug.port_count,
                               first=settings.port_pool_first, last=settings.port_pool_last)
        holder["token"] = secrets.token_hex(24)
        session.add(DebugSession(workload_id=workload.id, password_hash=password_hash,
                                 jupyter_token=holder["token"], port_first=ports[0],
                                 port_count=len(ports), ssh_user=settings.ssh_user))
        holder["ports"] = ports

    workload, placement = open_workload(platform, requester, debug.workload, name=debug.name, hold=hold)
    return workload, placement, holder["ports"], holder["token"]


def public_path(platform, workload_id: str) -> str:
    """Where the service serves the session's browser view (the Jupyter server's base URL)."""
    return f"{platform.service_prefix}debug/{workload_id}/open/"


async def create_session(platform, requester: Requester, raw) -> Workload:
    """Validate, hold resources and ports, start the container. Returns the workload.

    Refusals raise OptionError before anything exists. A container that cannot be created
    or started ends the session as "failed to start: <reason>" (it stays in the ended list).
    """
    debug = await asyncio.to_thread(validate_debug, platform, requester, raw)
    password_hash = await asyncio.to_thread(crypt_hash, debug.password)
    workload, placement, ports, token = await asyncio.to_thread(_open, platform, requester, debug, password_hash)
    try:
        await _start_container(platform, workload, placement, ports, password_hash, token)
    except (DockerException, OSError, ValueError) as e:
        reason = getattr(e, "explanation", None) or str(e)
        platform.log.warning("Debug session %s failed to start: %s", workload.id, reason)
        await remove_container(platform, workload.host, container_name(platform, workload.id))
        await asyncio.to_thread(end_workload, platform, workload.id, f"failed to start: {reason}")
    return await asyncio.to_thread(get_session, platform, workload.id)


async def _start_container(platform, workload, placement, ports, password_hash, token):
    settings = platform.debug
    host = platform.resources.host(placement.host)
    image_info = await ensure_image(platform, host.name, workload.image)  # pulled from the registry if missing
    labels = workload_labels(platform.instance, workload_id=workload.id, kind=KIND,
                             user=workload.user, placement=placement)
    labels["labdeck.ports"] = port_label(ports)
    published = {settings.container_ssh_port: ports[0], JUPYTER_PORT: None}
    published.update({p: p for p in ports[1:]})
    env = {
        "LABDECK_PASSWORD_HASH": password_hash,
        "LABDECK_JUPYTER_TOKEN": token,
        "LABDECK_JUPYTER_BASE_URL": public_path(platform, workload.id),
        "LABDECK_SSH_PORT": str(settings.container_ssh_port),
        "LABDECK_SSH_HOST_PORT": str(ports[0]),
        "LABDECK_PORTS": ",".join(str(p) for p in ports),
        "LABDECK_APP_PORTS": ",".join(str(p) for p in ports[1:]),
        "LABDECK_TASK_NAME": workload.name,
    }
    mounts = await asyncio.to_thread(_mounts, platform, workload)
    spec = platform.recipe.build(
        name=container_name(platform, workload.id), image=workload.image,
        image_labels=(image_info.get("Config") or {}).get("Labels"), host=host,
        placement=placement, labels=labels, mounts=mounts, env=env, ports=published,
    )
    container_id = await platform.docker.run(host.name, spec.create)
    await platform.docker.call(host.name, "start", container_id)
    bound = await platform.docker.call(host.name, "port", container_id, JUPYTER_PORT)
    await asyncio.to_thread(_record_container, platform, workload.id, spec.name, container_id,
                            int(bound[0]["HostPort"]))


def container_name(platform, workload_id: str) -> str:
    return f"{platform.instance}-{workload_id}"  # the ID says the kind: labdeck-dbg-3f9a1c2e


def _mounts(platform, workload):
    """The stored mappings, checked again by the path policy (a link may have changed since)."""
    return platform.paths.check_mappings(Requester(workload.user), workload.options.get("mounts") or [])


def _record_container(platform, workload_id, name, container_id, jupyter_host_port):
    with platform.db.session() as s:
        s.get(DebugSession, workload_id).jupyter_host_port = jupyter_host_port
        w = s.get(Workload, workload_id)
        w.container_id, w.container_name = container_id, name


async def wait_until_ready(platform, workload_id: str) -> None:
    """Mark the session running once sshd greets on its port and the browser view answers,
    or end it as failed to start.

    Safe to run twice for one session (the request that created it and the monitor after a
    restart may both follow it): whoever sees the outcome first records it, once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + platform.debug.start_timeout
    session = None
    while loop.time() < deadline:
        session = await asyncio.to_thread(get_session, platform, workload_id)
        if session is None or session["state"] != WorkloadState.starting.value:
            return
        if session["container_id"]:  # else: still being created
            host = platform.resources.host(session["host"])
            if await _ssh_greets(host.address, session["ssh_port"]) and await _jupyter_answers(platform, session):
                await asyncio.to_thread(mark_running, platform, workload_id, session["container_name"],
                                        session["container_id"])
                return
            if not await container_running(platform, host.name, session["container_id"]):
                break
        await asyncio.sleep(0.25)
    if session is None or not session["container_id"]:
        reason = "failed to start: the container was not created in time"
    else:
        tail = await container_log_tail(platform, session["host"], session["container_id"])
        await remove_container(platform, session["host"], session["container_id"])
        reason = f"failed to start: SSH or JupyterLab did not answer{(': ' + tail) if tail else ''}"
    await asyncio.to_thread(end_workload, platform, workload_id, reason)


async def _jupyter_answers(platform, session: dict) -> bool:
    """Whether the browser view's Jupyter server answers (any status below 500)."""
    target = await asyncio.to_thread(proxy_target, platform, session["id"])
    if target is None:
        return False
    url = f"{target[0]}{public_path(platform, session['id'])}api"
    try:
        response = await AsyncHTTPClient().fetch(url, raise_error=False, request_timeout=2,
                                                 headers={"Authorization": f"token {target[1]}"})
    except (OSError, HTTPClientError):
        return False
    return response.code < 500 and response.code != 599


async def _ssh_greets(address: str, port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 2)
    except (OSError, asyncio.TimeoutError):
        return False
    try:
        banner = await asyncio.wait_for(reader.readline(), 2)
        return banner.startswith(b"SSH-")
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def container_running(platform, host_name: str, container_id: str | None) -> bool:
    if not container_id:
        return False
    try:
        info = await platform.docker.call(host_name, "inspect_container", container_id)
    except NotFound:
        return False
    return bool(info["State"]["Running"])


async def container_log_tail(platform, host_name, container_id, lines: int = 3) -> str:
    if not container_id:
        return ""
    try:
        logs = await platform.docker.call(host_name, "logs", container_id, tail=20)
    except (DockerException, OSError):
        return ""
    text = logs.decode("utf-8", "replace").strip().splitlines()[-lines:]
    return " | ".join(text)


async def remove_container(platform, host_name: str, container: str | None) -> None:
    if not container:
        return
    try:
        await platform.docker.call(host_name, "remove_container", container, force=True)
    except NotFound:
        pass
    except APIError as e:
        platform.log.warning("Could not remove container %s: %s", container, e)


async def terminate_session(platform, workload_id: str, reason: str = "terminated by user") -> dict:
    session = await asyncio.to_thread(get_session, platform, workload_id)
    if session["state"] != WorkloadState.ended.value:
        host = session["host"]
        if session["container_id"]:
            try:
                await platform.docker.call(host, "stop", session["container_id"], timeout=5)
            except NotFound:
                pass
            await remove_container(platform, host, session["container_id"])
        await asyncio.to_thread(end_workload, platform, workload_id, reason)
    return await asyncio.to_thread(get_session, platform, workload_id)


def delete_sessions(platform, requester: Requester, ids: list[str]) -> list[str]:
    """Delete ended sessions' records. Running ones, and others' (unless admin), are refused."""
    with platform.db.session() as s:
        for w in ended_for_deletion(s, requester, ids, KIND, "session"):
            record = s.get(DebugSession, w.id)
            if record is not None:
                s.delete(record)
            s.delete(w)
    return list(ids)


def get_session(platform, workload_id: str) -> dict | None:
    with platform.db.session() as s:
        w = s.get(Workload, workload_id)
        if w is None or w.kind != KIND:
            return None
        return session_view(platform, w, s.get(DebugSession, workload_id))


def list_sessions(platform, requester: Requester, everyone: bool = False) -> list[dict]:
    with platform.db.session() as s:
        query = select(Workload).where(Workload.kind == KIND)
        if not (everyone and requester.admin):
            query = query.where(Workload.user == requester.name)
        workloads = list(s.scalars(query.order_by(Workload.created_at.desc())))
        records = {r.workload_id: r for r in s.scalars(
            select(DebugSession).where(DebugSession.workload_id.in_([w.id for w in workloads])))}
        return [session_view(platform, w, records.get(w.id)) for w in workloads]


def session_view(platform, w: Workload, record: DebugSession | None) -> dict:
    """What pages and the API show of a session (never the password hash or the token)."""
    settings = platform.debug
    ports = list(range(record.port_first, record.port_first + record.port_count)) if record else []
    host = platform.resources.host(w.host) if w.host in {h.name for h in platform.resources.all_hosts()} else None
    ssh_host = settings.ssh_host or (host.address if host else "")
    running = w.state != WorkloadState.ended.value
    return {
        "id": w.id, "name": w.name, "user": w.user, "state": w.state, "end_reason": w.end_reason,
        "image": w.image, "region": w.region, "host": w.host,
        "cpu": w.cpu_milli / 1000, "memory_gb": w.memory_mb / 1024, "gpus": w.gpu_count,
        "gpu_model": w.gpu_model, "mounts": w.options.get("mounts", []),
        "ports": ports, "port_range": port_label(ports),
        "ssh_port": ports[0] if ports else None,
        "ssh_command": f"ssh -p {ports[0]} {record.ssh_user}@{ssh_host}" if ports and running else None,
        "app_ports": ports[1:],
        "open_url": public_path(platform, w.id) + "lab" if running and w.state == WorkloadState.running.value else None,
        "created_at": w.created_at, "started_at": w.started_at, "ended_at": w.ended_at,
        "container_id": w.container_id, "container_name": w.container_name,
    }


def proxy_target(platform, workload_id: str) -> tuple[str, str] | None:
    """(backend origin, token) of a running session's Jupyter server, for the browser view."""
    with platform.db.session() as s:
        w = s.get(Workload, workload_id)
        record = s.get(DebugSession, workload_id)
        if w is None or record is None or w.state == WorkloadState.ended.value or not record.jupyter_host_port:
            return None
        host = platform.resources.host(w.host)
        return f"http://{host.address}:{record.jupyter_host_port}", record.jupyter_token
