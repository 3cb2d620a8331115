"""Job log followers (services.job_logs.JobLogs) on their own, against real containers of the
local engine: what lands in log.txt, when a follower reports the end, and that halting the
followers frees a stopping service at once even while a job prints nothing."""

import asyncio
import logging
from types import SimpleNamespace

import pytest

from services.job_logs import JobLogs
from tests.platform_containers import PlatformContainers

pytestmark = pytest.mark.integration

INSTANCE = "labdecktest-joblogs"


class _Platform:
    """What JobLogs uses of the platform: Docker clients by host, a log, background tasks."""

    def __init__(self, client):
        self.docker = SimpleNamespace(client=lambda host_name: client)
        self.log = logging.getLogger("test_job_logs")
        self.tasks = []

    def spawn_background(self, coro):
        self.tasks.append(asyncio.ensure_future(coro))


@pytest.fixture(scope="module")
def containers(docker_client):
    made = PlatformContainers(docker_client, INSTANCE, "job-logs")
    yield made
    made.remove_all()


def job(containers, notebook_image, script):
    """A container run the way jobs run (services.jobs): the script under a shell, whatever the
    image's own entrypoint."""
    return containers.start(notebook_image, kind="job", id_prefix="job", entrypoint=["/bin/sh", "-c"],
                            command=[script])


async def until(check, timeout=30, interval=0.05):
    for _ in range(int(timeout / interval)):
        if check():
            return
        await asyncio.sleep(interval)
    raise AssertionError("timed out")


def test_a_followed_job_reports_its_end_once_with_its_whole_log(docker_client, containers, notebook_image, tmp_path):
    container = job(containers, notebook_image, "echo one; sleep 0.3; echo two >&2; sleep 1; echo three")
    path = tmp_path / "log.txt"
    ended = []

    async def on_end(platform, workload_id, host_name, container_id):
        ended.append((workload_id, container_id, path.read_text()))

    async def main():
        logs = JobLogs(_Platform(docker_client.api), threads=2)
        logs.follow("job-1", "local", container.id, path, on_end=on_end)
        logs.follow("job-1", "local", container.id, path, on_end=on_end)  # a second call adds nothing
        await until(lambda: ended)
        await asyncio.sleep(0.3)  # a second report would come now

    asyncio.run(main())
    assert ended == [("job-1", container.id, "one\ntwo\nthree\n")]


def test_halting_frees_a_follower_of_a_quiet_job_at_once_and_reports_no_end(docker_client, containers,
                                                                           notebook_image, tmp_path):
    container = job(containers, notebook_image, "echo started; sleep 300")
    path = tmp_path / "log.txt"
    ended = []

    async def on_end(*args):
        ended.append(args)

    async def main():
        logs = JobLogs(_Platform(docker_client.api), threads=2)
        logs.follow("job-2", "local", container.id, path, on_end=on_end)
        await until(lambda: path.exists() and path.read_text() == "started\n")
        logs.halt()
        future, _copy = logs._followers["job-2"]
        # the follower was blocked reading a stream with nothing in it; it must end now, not in 300 s
        await asyncio.wait_for(asyncio.wrap_future(future), 10)
        await asyncio.sleep(0.3)

    asyncio.run(main())
    container.reload()
    assert container.status == "running"  # the job itself goes on
    assert ended == [] and path.read_text() == "started\n"


def test_finishing_without_a_follower_rewrites_the_whole_log(docker_client, containers, notebook_image, tmp_path):
    container = job(containers, notebook_image, "for i in 1 2 3; do echo line $i; done")
    container.wait(timeout=30)
    path = tmp_path / "log.txt"
    path.write_text("line 1\nline 1\n")  # what a follower wrote before the service restarted

    async def main():
        logs = JobLogs(_Platform(docker_client.api), threads=2)
        await logs.finish("job-3", "local", container.id, path)

    asyncio.run(main())
    assert path.read_text() == "line 1\nline 2\nline 3\n"
