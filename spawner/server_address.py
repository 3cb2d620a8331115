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


def published(info: dict, port: int) -> tuple[str, int] | None:
    """The (host address, host port) a container port is published on, from its inspect data."""
    bindings = ((info.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
    return (bindings[0]["HostIp"], int(bindings[0]["HostPort"])) if bindings else None


class ServerAddress:
    """Mixed into LabdeckSpawner, which provides ``platform``, ``host_name``, ``get_object`` and
    DockerSpawner's ``get_ip_and_port``."""

    async def get_ip_and_port(self):
        host = self.platform.resources.host(self.host_name) if self.host_name else None
        if host is not None and host.is_local:
            ip = network_ip(await self.get_object(), self.platform.recipe.network)
            if ip:
                return ip, self.port
        return await super().get_ip_and_port()

    async def get_url(self):
        """The server's current address (asked at hub start-up: it may have moved)."""
        if not self.object_id:
            return await super().get_url()
        try:
            ip, port = await self.get_ip_and_port()
        except (APIError, RuntimeError, TypeError, KeyError):
            return await super().get_url()
        return f"http://{ip}:{port}{self.server.base_url if self.server else '/'}"
