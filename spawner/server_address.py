"""Where the hub and the proxy reach a single-user server.

On a host whose engine runs on this machine: at the container's own address on the engine's
network. Its published port is relayed by docker-proxy, a process in the engine's CPU group,
which someone's snapshot or image build keeps busy: under benchmarks/isolation.py's load, the
hub's first request to a claimed server took 21 ms instead of 5 that way, and every page and
kernel message the user exchanges took the same detour. Other hosts: the published port, as
DockerSpawner does (their networks are not routed to this machine).
"""

from docker.errors import APIError


def ports_to_publish(host, port: int) -> dict[int, None] | None:
    """What a server's container publishes: nothing on a local engine (reached on its network,
    which also spares the engine a docker-proxy process per server at every start), else its
    port on any free host port."""
    return None if host.is_local else {port: None}


def network_ip(info: dict | None, network: str) -> str:
    """The container's address on ``network`` from its inspect data, or "" (not attached to it)."""
    networks = ((info or {}).get("NetworkSettings") or {}).get("Networks") or {}
    return (networks.get(network) or {}).get("IPAddress") or ""


def published(info: dict | None, port: int) -> tuple[str, int] | None:
    """The (host address, host port) a container port is published on, from its inspect data."""
    bindings = (((info or {}).get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
    return (bindings[0]["HostIp"], int(bindings[0]["HostPort"])) if bindings else None


def server_address(host, info: dict | None, network: str, port: int) -> tuple[str, int] | None:
    """Where the hub reaches a container's ``port``: on a local engine, its address on
    ``network``; else (or when it has none there) the port it publishes, on the host's address
    when published on all of them. None: it cannot be reached."""
    ip = network_ip(info, network) if host.is_local else ""
    if ip:
        return ip, port
    binding = published(info, port)
    if binding is None:
        return None
    return (host.address if binding[0] in ("0.0.0.0", "") else binding[0]), binding[1]


class ServerAddress:
    """Mixed into LabdeckSpawner, which provides ``platform``, ``host_name`` and ``get_object``."""

    async def get_ip_and_port(self):
        if not self.host_name:  # no host recorded: DockerSpawner's own lookup
            return await super().get_ip_and_port()
        address = server_address(self.platform.resources.host(self.host_name), await self.get_object(),
                                 self.platform.recipe.network, self.port)
        if address is None:
            raise RuntimeError(f"{self.object_name} has no address on network "
                               f"{self.platform.recipe.network!r} and publishes no port {self.port}")
        return address

    async def get_url(self):
        """The server's current address (asked at hub start-up: it may have moved)."""
        if not self.object_id:
            return await super().get_url()
        try:
            ip, port = await self.get_ip_and_port()
        except (APIError, RuntimeError, TypeError, KeyError):
            return await super().get_url()
        return f"http://{ip}:{port}{self.server.base_url if self.server else '/'}"
