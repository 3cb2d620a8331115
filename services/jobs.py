"""Training and evaluation jobs (训练/测评): a start command run in a container until it ends.

A job is a workload of kind ``job``. It is validated like every workload, recorded as
``queued`` without holding anything, and started by :mod:`services.job_queue` when the
ledger can place it. Its folder on platform storage holds ``output/`` (mounted read-write at
/output) and ``log.txt`` (stdout and stderr, written while it runs and kept after the
container is gone). The container is removed once the log and the exit status are saved.
"""

import asyncio
import os
from dataclasses import replace
from pathlib import Path

from docker.errors import APIError, NotFound
from sqlalchemy import select
from traitlets import Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .caches import record_usage
from .errors import OptionError
from .identity import Requester
from .models import Job, Workload, WorkloadState, utcnow
from .naming import escape_name, new_workload_id
from .options import check_task_name, validate_request
from .path_roots import is_within
from .paths import Mount
from .recipe import workload_labels
from .repository import ensure_image
from .workloads import ID_PREFIX, end_workload, ended_for_deletion, mark_running

KIND = "job"
EXTRA_FIELDS = ("name", "command", "time_limit_min")
OUTPUT_PATH = "/output"
MAX_COMMAND = 20_000


class JobSettings(LoggingConfigurable):
    """Settings of training/evaluation jobs."""

    storage_root = Unicode(
        help="Where job folders (output/ and log.txt) live. Default: <Platform.data_dir>/jobs."
    ).tag(config=True)

    @default("storage_root")
    def _default_storage_root(self):
        return str(Path(self.parent.data_dir) / "jobs")

    max_time_limit_min = Integer(7 * 24 * 60, help="Longest time limit a job may ask for (minutes).").tag(config=True)
    max_bypasses = Integer(
        5,
        help="How often later, smaller jobs may start before a waiting job of the same region; "
             "after that they wait behind it, so no job starves.",
    ).tag(config=True)
    stop_timeout = Integer(10, help="Seconds a stopped job gets to exit before it is killed.").tag(config=True)
    run_as = Unicode("1000:100", help="uid:gid jobs run as (the owner of user storage).").tag(config=True)


# ---------------------------------------------------------------- validation and submission


def validate_job(platform, requester: Requester, raw):
    """The shared validation plus the job's own fields; returns (request, name, command, limit)."""
    request = validate_request(platform, requester, KIND, raw, extra_fields=EXTRA_FIELDS)
    extra = request.extra
    name = check_task_name(extra.get("name"))
    command = extra.get("command")
    if not isinstance(command, str) or not command.strip():
        raise OptionError("command", "give the command to run, e.g. python train.py --epochs 10")
    if len(command) > MAX_COMMAND or "\x00" in command:
        raise OptionError("command", f"must be at most {MAX_COMMAND} characters, without NUL bytes")
    limit = _time_limit(platform, extra.get("time_limit_min"))
    for i, mount in enumerate(request.mounts):
        if is_within(mount.container_path, OUTPUT_PATH) or is_within(OUTPUT_PATH, mount.container_path):
            raise OptionError(f"mounts[{i}].container_path",
                              f"{OUTPUT_PATH} is where the job's output folder appears; choose another path")
    clean = replace(request, extra={"name": name, "command": command.strip(), "time_limit_min": limit})
    return clean, name, command.strip(), limit


def _time_limit(platform, raw) -> float | None:
    """Minutes (decimals allowed: 0.5 is 30 seconds), or None for no limit."""
    if raw in (None, ""):
        return None
    most = platform.jobs.max_time_limit_min
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = 0.0
    if not (0.1 <= value <= most):
        raise OptionError("time_limit_min", f"must be a number of minutes from 0.1 to {most}, or empty for none")
    return value


def job_folder(platform, user: str, workload_id: str) -> Path:
    return Path(platform.jobs.storage_root) / escape_name(user) / workload_id


def _record(platform, requester: Requester, request, name, command, limit) -> str:
    workload_id = new_workload_id(ID_PREFIX[KIND])
    folder = job_folder(platform, requester.name, workload_id)
    output = folder / "output"
    output.mkdir(parents=True, mode=0o750)
    (folder / "log.txt").touch()
    if os.geteuid() == 0:  # the job's code writes its output as the storage user
        uid, gid = (int(x) for x in platform.jobs.run_as.split(":"))
        os.chown(output, uid, gid)
    r = request.resources
    with platform.db.write_transaction() as s:
        s.add(Workload(id=workload_id, kind=KIND, user=requester.name, name=name,
                       state=WorkloadState.queued.value, region=r.region, image=request.image.name,
                       cpu_milli=r.cpu_milli, memory_mb=r.memory_mb, gpu_model=r.gpu_model,
                       gpu_count=r.gpu_count, options=request.as_options()))
        s.flush()
        s.add(Job(workload_id=workload_id, command=command, folder=str(folder),
                  time_limit_s=round(limit * 60) if limit else None,
                  groups=sorted(requester.groups)))
    return workload_id


async def submit_job(platform, requester: Requester, raw) -> dict:
    """Validate and queue a job; the queue starts it as soon as the ledger can place it."""
    request, name, command, limit = await asyncio.to_thread(validate_job, platform, requester, raw)
    workload_id = await asyncio.to_thread(_record, platform, requester, request, name, command, limit)
    await platform.job_queue.run()
    return await asyncio.to_thread(get_job, platform, workload_id)


# ---------------------------------------------------------------- containers


def container_name(platform, workload_id: str) -> str:
    return f"{platform.instance}-{workload_id}"


def _load(platform, workload_id: str):
    with platform.db.session() as s:
        return s.get(Workload, workload_id), s.get(Job, workload_id)


async def start_container(platform, workload_id: str, placement) -> None:
    """Create and start the job's container (its resources are already held)."""
    workload, job = await asyncio.to_thread(_load, platform, workload_id)
    host = platform.resources.host(placement.host)
    image_info = await ensure_image(platform, host.name, workload.image)  # pulled from the registry if missing
    mounts = await asyncio.to_thread(
        platform.paths.check_mappings, Requester(workload.user), workload.options.get("mounts") or [])
    mounts.append(Mount(host_path=str(Path(job.folder) / "output"), container_path=OUTPUT_PATH,
                        read_only=False, root="job"))
    labels = workload_labels(platform.instance, workload_id=workload_id, kind=KIND,
                             user=workload.user, placement=placement)
    env = {"LABDECK_OUTPUT_DIR": OUTPUT_PATH, "LABDECK_JOB_ID": workload_id, "LABDECK_TASK_NAME": workload.name}
    spec = platform.recipe.build(
        name=container_name(platform, workload_id), image=workload.image,
        image_labels=(image_info.get("Config") or {}).get("Labels"), host=host, placement=placement,
        labels=labels, mounts=mounts, env=env,
        # the command runs as the storage user under a shell, whatever the image's own entrypoint
        entrypoint=["/bin/sh", "-c"], command=[job.command], user=platform.jobs.run_as,
    )
    container_id = await platform.docker.run(host.name, spec.create)
    await platform.docker.call(host.name, "start", container_id)
    await asyncio.to_thread(mark_running, platform, workload_id, spec.name, container_id)
    await asyncio.to_thread(record_usage, platform, workload_id, workload.user, KIND, mounts)
    platform.job_logs.follow(workload_id, host.name, container_id, Path(job.folder) / "log.txt", on_end=on_log_end)


async def finalize(platform, workload_id: str, host_name: str, container_id: str) -> None:
    """The container has exited: keep its log and exit status, end the job, remove the container.

    Once per job: the exit hook, a terminate and a monitor round may all see the exit at the
    same moment; later callers wait for the first one's work instead of repeating it."""
    running = platform.finalizing_jobs
    task = running.get(workload_id)
    if task is None:
        task = running[workload_id] = asyncio.ensure_future(_finalize(platform, workload_id, host_name, container_id))
        task.add_done_callback(lambda _t: running.pop(workload_id, None))
    await asyncio.shield(task)


async def _finalize(platform, workload_id: str, host_name: str, container_id: str) -> None:
    workload, job = await asyncio.to_thread(_load, platform, workload_id)
    if workload is None or workload.state == WorkloadState.ended.value:
        return  # finished already: its log and status are kept
    log_path = Path(job.folder) / "log.txt"
    await platform.job_logs.finish(workload_id, host_name, container_id, log_path)
    try:
        info = await platform.docker.call(host_name, "inspect_container", container_id)
        code = int(info["State"]["ExitCode"])
    except NotFound:
        code = job.exit_code  # kept before an interrupted finish removed the container
    # the exit status is kept first, then the container goes, then the job shows as ended: a
    # job seen ended has no container left, and a restart in between loses nothing
    await asyncio.to_thread(_keep_exit_code, platform, workload_id, code)
    try:
        await platform.docker.call(host_name, "remove_container", container_id, force=True)
    except NotFound:
        pass
    except APIError as e:
        if e.status_code != 409:  # 409: Docker is removing it already
            raise
    await asyncio.to_thread(_end, platform, workload_id, end_reason(job.end_requested, code), code)


def end_reason(requested: str | None, code: int | None) -> str:
    if requested:
        return requested
    if code == 0:
        return "succeeded"
    if code is None:
        return "lost: container vanished before its exit status was read"
    return f"failed with exit code {code}"


def _keep_exit_code(platform, workload_id: str, code: int | None) -> None:
    with platform.db.session() as s:
        s.get(Job, workload_id).exit_code = code


async def on_log_end(platform, workload_id: str, host_name: str, container_id: str) -> None:
    """The container's log stream ended: if it exited, finish the job now (not at the next
    monitor round) and give its resources to the queue."""
    state = await _container_state(platform, host_name, container_id)
    if state is not None and state["Status"] in ("exited", "dead"):
        await finalize(platform, workload_id, host_name, container_id)
        await platform.job_queue.run()


def _end(platform, workload_id: str, reason: str, code: int | None) -> None:
    end_workload(platform, workload_id, reason)
    with platform.db.session() as s:
        s.get(Job, workload_id).exit_code = code


def _request_end(platform, workload_id: str, reason: str) -> None:
    with platform.db.session() as s:
        job = s.get(Job, workload_id)
        job.end_requested = job.end_requested or reason


async def stop_job(platform, workload_id: str, reason: str) -> dict:
    """End a job for ``reason`` (terminated by user, exceeded time limit): a queued job at once,
    a running one after its container stopped and its log was kept."""
    view = await asyncio.to_thread(get_job, platform, workload_id)
    if view["state"] == WorkloadState.ended.value:
        return view
    await asyncio.to_thread(_request_end, platform, workload_id, reason)
    if view["state"] == WorkloadState.queued.value or not view["container_id"]:
        await asyncio.to_thread(_end, platform, workload_id, reason, None)
    else:
        try:
            await platform.docker.call(view["host"], "stop", view["container_id"], timeout=platform.jobs.stop_timeout)
        except NotFound:
            pass
        await finalize(platform, workload_id, view["host"], view["container_id"])
    await platform.job_queue.run()
    return await asyncio.to_thread(get_job, platform, workload_id)


# ---------------------------------------------------------------- watching running jobs


async def check(platform, observed: dict, unreachable: list[str]) -> None:
    """One monitor round for jobs: finish exited ones, enforce time limits, follow logs,
    put back in the queue jobs whose start a restart interrupted, end vanished ones."""
    for workload, job in await asyncio.to_thread(_active, platform):
        if workload.host in unreachable:
            continue
        obs = observed.get(workload.id)
        if obs is None or not obs.running:
            # the observation may predate this job's start: ask Docker again before concluding
            state = await _container_state(platform, workload.host, container_name(platform, workload.id))
            if state is None:
                await _missing(platform, workload, job)
            elif state["Status"] in ("exited", "dead"):
                await finalize(platform, workload.id, workload.host, container_name(platform, workload.id))
        else:
            if workload.container_id:
                platform.job_logs.follow(workload.id, obs.host, workload.container_id, Path(job.folder) / "log.txt",
                                         on_end=on_log_end)
            if _over_time(workload, job):
                limit = f"{job.time_limit_s / 60:g} min"
                platform.spawn_background(stop_job(platform, workload.id, f"exceeded time limit ({limit})"))


async def _container_state(platform, host_name: str, container: str) -> dict | None:
    try:
        return (await platform.docker.call(host_name, "inspect_container", container))["State"]
    except NotFound:
        return None


def _active(platform):
    with platform.db.session() as s:
        rows = s.execute(select(Workload, Job).join(Job, Job.workload_id == Workload.id).where(
            Workload.state.in_((WorkloadState.starting.value, WorkloadState.running.value))))
        return [(w, j) for w, j in rows]


def _over_time(workload, job) -> bool:
    if not job.time_limit_s or not workload.started_at:
        return False
    return (utcnow() - workload.started_at).total_seconds() > job.time_limit_s


async def _missing(platform, workload, job) -> None:
    if workload.state == WorkloadState.running.value and workload.container_id:
        if job.exit_code is not None:  # it had exited and its status was kept; the finish was cut short
            await asyncio.to_thread(_end, platform, workload.id, end_reason(job.end_requested, job.exit_code),
                                    job.exit_code)
        else:
            await asyncio.to_thread(_end, platform, workload.id, "lost: container vanished", None)
        return
    # starting without a container: a restart interrupted its start; give it its place back
    if (utcnow() - (workload.started_at or workload.created_at)).total_seconds() > 120:
        await asyncio.to_thread(platform.job_queue.requeue, workload.id)


# ---------------------------------------------------------------- reading


def _positions(session) -> dict[str, int]:
    """Queue position of every queued job, per region, first come first served."""
    rows = session.execute(select(Workload.id, Workload.region).join(Job, Job.workload_id == Workload.id)
                           .where(Workload.state == WorkloadState.queued.value).order_by(Job.queued_at))
    positions, counts = {}, {}
    for workload_id, region in rows:
        counts[region] = counts.get(region, 0) + 1
        positions[workload_id] = counts[region]
    return positions


def get_job(platform, workload_id: str) -> dict | None:
    with platform.db.session() as s:
        workload, job = s.get(Workload, workload_id), s.get(Job, workload_id)
        if workload is None or job is None:
            return None
        return job_view(platform, workload, job, _positions(s).get(workload_id))


def list_jobs(platform, requester: Requester, everyone: bool = False) -> list[dict]:
    with platform.db.session() as s:
        query = select(Workload, Job).join(Job, Job.workload_id == Workload.id)
        if not (everyone and requester.admin):
            query = query.where(Workload.user == requester.name)
        positions = _positions(s)
        return [job_view(platform, w, j, positions.get(w.id))
                for w, j in s.execute(query.order_by(Workload.created_at.desc()))]


def job_view(platform, w: Workload, job: Job, position: int | None) -> dict:
    base = f"{platform.service_prefix}jobs/{w.id}"
    return {
        "id": w.id, "name": w.name, "user": w.user, "state": w.state, "position": position,
        "end_reason": w.end_reason, "exit_code": job.exit_code, "command": job.command,
        "time_limit_min": job.time_limit_s / 60 if job.time_limit_s else None, "image": w.image, "region": w.region, "host": w.host,
        "cpu": w.cpu_milli / 1000, "memory_gb": w.memory_mb / 1024, "gpus": w.gpu_count,
        "gpu_model": w.gpu_model, "mounts": w.options.get("mounts", []), "options": dict(w.options),
        "submitted_at": w.created_at, "started_at": w.started_at, "ended_at": w.ended_at,
        "container_id": w.container_id, "log_url": f"{base}/log", "files_url": f"{base}/files/",
    }


def folder_of(platform, workload_id: str) -> Path | None:
    with platform.db.session() as s:
        job = s.get(Job, workload_id)
        return Path(job.folder) if job else None


def delete_jobs(platform, requester: Requester, ids: list[str], remove_tree) -> list[str]:
    """Delete ended jobs: record, log and output folder. Running ones, and others', are refused."""
    with platform.db.session() as s:
        folders = []
        for w in ended_for_deletion(s, requester, ids, KIND, "job"):
            job = s.get(Job, w.id)
            folders.append(Path(job.folder))
            s.delete(job)
            s.delete(w)
    for folder in folders:
        remove_tree(folder, base=Path(platform.jobs.storage_root))
    return list(ids)


async def log_stream_done(platform, workload_id: str) -> bool:
    view = await asyncio.to_thread(get_job, platform, workload_id)
    return view is None or view["state"] == WorkloadState.ended.value

