"""Who is asking: the part of a JupyterHub user the policies need."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Requester:
    """A signed-in user as the policies see them.

    ``groups`` are JupyterHub group names (departments).
    """

    name: str
    groups: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False

    @classmethod
    def from_hub_user(cls, user) -> "Requester":
        """Build from a JupyterHub ``User`` (hub side) or a HubAuth user model (dict)."""
        if isinstance(user, dict):
            return cls(
                name=user["name"],
                groups=frozenset(user.get("groups") or ()),
                admin=bool(user.get("admin")),
            )
        return cls(
            name=user.name,
            groups=frozenset(g.name for g in user.groups),
            admin=bool(user.admin),
        )
