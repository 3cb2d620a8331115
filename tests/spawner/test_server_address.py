"""Where the hub reaches a server: the container's own address on a local engine's network,
the published port elsewhere (spawner/server_address.py; pure logic)."""

import types

import pytest

from services.resources import Host
from spawner.server_address import ServerAddress, network_ip, ports_to_publish, published, server_address

ATTACHED = {"NetworkSettings": {
    "Networks": {"bridge": {"IPAddress": "172.17.0.5"}},
    "Ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32801"}]}}}
DETACHED = {"NetworkSettings": {"Networks": {"bridge": {"IPAddress": ""}}, "Ports": {}}}
# on another network than the recipe's, its port published (as servers did before this version)
PUBLISHED_ONLY = {"NetworkSettings": {"Networks": {"labnet": {"IPAddress": "10.1.0.7"}},
                                      "Ports": {"8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32801"}]}}}


@pytest.mark.parametrize("info, network, ip", [
    (ATTACHED, "bridge", "172.17.0.5"),
    (ATTACHED, "labnet", ""),  # not on the network the recipe uses
    (DETACHED, "bridge", ""),  # stopped: no address
    ({"NetworkSettings": {"Networks": {}}}, "bridge", ""),  # network_mode none
    ({}, "bridge", ""),
    (None, "bridge", ""),  # the container is gone
])
def test_network_ip(info, network, ip):
    assert network_ip(info, network) == ip


@pytest.mark.parametrize("info, port, binding", [
    (ATTACHED, 8888, ("127.0.0.1", 32801)),
    (ATTACHED, 22, None),
    (DETACHED, 8888, None),
])
def test_published(info, port, binding):
    assert published(info, port) == binding


class DockerSpawnerAnswer:
    async def get_ip_and_port(self):
        return "127.0.0.1", 32801  # what DockerSpawner reads from the published port


class Spawner(ServerAddress, DockerSpawnerAnswer):
    port = 8888
    object_name = "labdeck-nb-alice"

    def __init__(self, docker_url, host_name, info):
        host = Host("h1", "default", docker_url, None, "127.0.0.1", 4, 4096, (), "declared")
        self.platform = types.SimpleNamespace(resources=types.SimpleNamespace(host=lambda name: host),
                                              recipe=types.SimpleNamespace(network="bridge"))
        self.host_name, self.info = host_name, info

    async def get_object(self):
        return self.info


@pytest.mark.parametrize("docker_url, host_name, info, address", [
    ("unix:///var/run/docker.sock", "h1", ATTACHED, ("172.17.0.5", 8888)),  # no docker-proxy in the way
    ("unix:///var/run/docker.sock", "h1", PUBLISHED_ONLY, ("127.0.0.1", 32801)),
    ("tcp://gpu-02:2376", "h1", ATTACHED, ("127.0.0.1", 32801)),  # another machine's network is not routed here
    ("unix:///var/run/docker.sock", "", ATTACHED, ("127.0.0.1", 32801)),  # no host recorded (an old server)
])
async def test_local_servers_are_reached_on_the_engines_network(docker_url, host_name, info, address):
    assert await Spawner(docker_url, host_name, info).get_ip_and_port() == address


@pytest.mark.parametrize("docker_url, ports", [
    ("unix:///var/run/docker.sock", None),  # reached on the engine's network: nothing to publish
    ("tcp://gpu-02:2376", {8888: None}),
])
def test_only_servers_on_other_machines_publish_their_port(docker_url, ports):
    host = Host("h1", "default", docker_url, None, "127.0.0.1", 4, 4096, (), "declared")
    assert ports_to_publish(host, 8888) == ports


async def test_a_server_with_no_address_is_an_error():
    with pytest.raises(RuntimeError, match="no address on network 'bridge' and publishes no port 8888"):
        await Spawner("unix:///var/run/docker.sock", "h1", DETACHED).get_ip_and_port()


ALL_ADDRESSES = {"NetworkSettings": {"Networks": {}, "Ports": {"8888/tcp": [{"HostIp": "0.0.0.0", "HostPort": "40001"}]}}}


@pytest.mark.parametrize("docker_url, info, address", [
    ("unix:///var/run/docker.sock", ATTACHED, ("172.17.0.5", 8888)),
    ("tcp://gpu-02:2376", ATTACHED, ("127.0.0.1", 32801)),  # the host's network is not routed here
    ("tcp://gpu-02:2376", ALL_ADDRESSES, ("10.0.0.2", 40001)),  # published on all: the host's address
    ("unix:///var/run/docker.sock", DETACHED, None),
])
def test_server_address(docker_url, info, address):
    host = Host("h1", "default", docker_url, None, "10.0.0.2", 4, 4096, (), "declared")
    assert server_address(host, info, "bridge", 8888) == address
