"""The background rename of a claimed warm server (WarmClaims._rename) against the real engine:
the server takes its user's server name, a container an earlier start left under that name
gives way, and a server that stopped meanwhile leaves a newer start's container alone."""

import asyncio
import logging
import uuid

import docker
import pytest

from spawner.warm_claims import WarmClaims

pytestmark = pytest.mark.integration

LABEL = "labdeck.test"


class ClaimedServer:
    """What _rename reads of a LabdeckSpawner: its container's ID (cleared by stop), the name
    its server should have, a log, and Docker calls off the event loop."""

    def __init__(self, client, object_id, object_name):
        self.client, self.object_id, self.object_name = client, object_id, object_name
        self.log = logging.getLogger("test_warm_rename")

    async def docker(self, method, *args, **kwargs):
        return await asyncio.to_thread(getattr(self.client, method), *args, **kwargs)


@pytest.fixture
def engine(docker_client, notebook_image):
    tag = uuid.uuid4().hex[:8]

    def create(name):
        return docker_client.api.create_container(notebook_image.id, command=["sleep", "60"], name=f"{name}-{tag}",
                                                  labels={LABEL: tag})["Id"]

    yield create, tag
    for c in docker_client.containers.list(all=True, filters={"label": f"{LABEL}={tag}"}):
        c.remove(force=True)


def name_of(client, cid):
    return client.inspect_container(cid)["Name"].lstrip("/")


def test_a_claimed_server_takes_its_name(docker_client, engine):
    create, tag = engine
    warm = create("warm")
    asyncio.run(WarmClaims._rename(ClaimedServer(docker_client.api, warm, f"nb-alice-{tag}"), warm))
    assert name_of(docker_client.api, warm) == f"nb-alice-{tag}"


def test_a_container_left_under_the_name_gives_way(docker_client, engine):
    create, tag = engine
    left, warm = create("nb-bob"), create("warm")
    asyncio.run(WarmClaims._rename(ClaimedServer(docker_client.api, warm, f"nb-bob-{tag}"), warm))
    assert name_of(docker_client.api, warm) == f"nb-bob-{tag}"
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(left)


def test_a_server_stopped_before_its_rename_leaves_a_newer_start_alone(docker_client, engine):
    create, tag = engine
    warm, newer = create("warm"), create("nb-carol")
    server = ClaimedServer(docker_client.api, None, f"nb-carol-{tag}")  # stop cleared object_id
    asyncio.run(WarmClaims._rename(server, warm))
    assert name_of(docker_client.api, newer) == f"nb-carol-{tag}"
    assert name_of(docker_client.api, warm) == f"warm-{tag}"
