"""Host port ranges for workloads that publish ports (remote-debug sessions).

A range is contiguous, taken from a configured pool per host, and held in the ledger's
database: one row per port with ``UNIQUE(host, port)``, so two processes can never hand
out the same port. Ports are released with the rest of a workload's resources.
"""

import socket

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .errors import CapacityError
from .models import PortAllocation


def port_is_bindable(address: str, port: int) -> bool:
    """Whether nothing else on this machine listens on the port (local hosts only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address if address not in ("", "0.0.0.0") else "0.0.0.0", port))
        except OSError:
            return False
    return True


def allocate_ports(session, *, host, workload_id: str, count: int, first: int, last: int,
                   probe=port_is_bindable) -> list[int]:
    """Hold ``count`` consecutive ports of ``host`` within [first, last]; the lowest free range.

    On a local engine, ports some other program listens on are skipped too.
    """
    for _attempt in range(5):
        used = set(session.scalars(select(PortAllocation.port).where(PortAllocation.host == host.name)))
        start = first
        while start + count - 1 <= last:
            block = range(start, start + count)
            clash = [p for p in block if p in used or (host.is_local and not probe(host.address, p))]
            if clash:
                start = clash[-1] + 1
                continue
            try:
                with session.begin_nested():
                    for port in block:
                        session.add(PortAllocation(host=host.name, port=port, workload_id=workload_id))
                    session.flush()  # the unique constraint speaks here
                return list(block)
            except IntegrityError:
                break  # another process took one of them: read again
        else:
            raise CapacityError(
                "ports", f"{count} consecutive free ports are not left on host {host.name} "
                         f"(pool {first}-{last}); try fewer ports or later")
    raise CapacityError("ports", f"could not reserve {count} ports on host {host.name}; try again")


def restore_ports(session, host_name: str, workload_id: str, ports: list[int]) -> None:
    """Record ports a running container publishes (from its labels): Docker is the truth."""
    for port in ports:
        try:
            with session.begin_nested():
                session.add(PortAllocation(host=host_name, port=port, workload_id=workload_id))
        except IntegrityError:
            pass


def parse_port_label(text: str) -> list[int]:
    """``"40000-40003"`` -> [40000, 40001, 40002, 40003]; anything else -> []."""
    first, _, last = (text or "").partition("-")
    if not (first.isdigit() and (last or first).isdigit()):
        return []
    return list(range(int(first), int(last or first) + 1))


def port_label(ports: list[int]) -> str:
    return f"{ports[0]}-{ports[-1]}" if ports else ""
