"""Containers of an image test, made the way the platform makes them: through the one container
recipe (cap_drop ALL plus the image's label, no-new-privileges, limits) on the local engine,
under a platform instance of the test's own (so the hub tests' clean-up leaves them alone) and a
``labdeck.test`` label, and all removed when the test module ends."""

from docker.errors import NotFound

from services.ledger import Placement
from services.naming import new_workload_id
from services.recipe import ContainerRecipe, workload_labels
from services.resources import GPU_SOURCE_DECLARED, Host

LOCAL = Host(name="local", region="default", docker_url="unix:///var/run/docker.sock", tls=None,
             address="127.0.0.1", cpus=2, memory_mb=4096, gpus=(), gpu_source=GPU_SOURCE_DECLARED)


class PlatformContainers:
    def __init__(self, docker_client, instance: str, test_label: str):
        self.docker_client = docker_client
        self.instance = instance
        self.test_labels = {"labdeck.test": test_label}
        self.recipe = ContainerRecipe()
        self.created = []

    def start(self, image, *, kind: str, id_prefix: str, memory_mb: int = 1024, env: dict | None = None,
              ports: dict | None = None, command=None, entrypoint: list[str] | None = None, mounts=()):
        """A started container of ``image`` (a docker-py Image), one CPU and ``memory_mb``."""
        workload_id = new_workload_id(id_prefix)
        placement = Placement(workload_id, LOCAL.name, LOCAL.region, 1000, memory_mb, None, ())
        labels = workload_labels(self.instance, workload_id=workload_id, kind=kind, user="tester",
                                 placement=placement)
        spec = self.recipe.build(
            name=f"{self.instance}-{workload_id}", image=image.id, image_labels=image.labels, host=LOCAL,
            placement=placement, labels={**labels, **self.test_labels}, env=env, ports=ports, command=command,
            entrypoint=entrypoint, mounts=list(mounts),
        )
        container = self.docker_client.containers.get(spec.create(self.docker_client.api))
        self.created.append(container)
        container.start()
        return container

    def remove_all(self):
        for container in self.created:
            try:
                container.remove(force=True)
            except NotFound:
                pass
        self.created.clear()
