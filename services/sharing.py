"""Sharing with users and departments (hub groups): the one member-list policy behind shared
caches and shared images.

A member is ``{"kind": "user" | "group", "name": ...}``. Changes are validated here (bad entries
and unknown users name the field), and membership is decided here, so "who may use it" never
differs between the two modules.
"""

from dataclasses import dataclass

from sqlalchemy import select

from .errors import OptionError
from .identity import Requester
from .models import Account

MEMBER_KINDS = ("user", "group")
MAX_NAME = 255


@dataclass(frozen=True, order=True)
class Member:
    kind: str  # "group" sorts before "user": departments first in every list
    name: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name}


def parse_changes(add, remove) -> tuple[list[Member], list[Member]]:
    """Validated ``add`` and ``remove`` lists; OptionError names the bad entry."""
    parsed = []
    for field, entries in (("add", add), ("remove", remove)):
        if not isinstance(entries, list):
            raise OptionError(field, "must be a list of {kind: user|group, name}")
        members = []
        for i, entry in enumerate(entries):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or entry.get("kind") not in MEMBER_KINDS \
                    or not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
                raise OptionError(f"{field}[{i}]", "must be {\"kind\": \"user\" or \"group\", \"name\": a name}")
            members.append(Member(entry["kind"], name.strip()))
        parsed.append(members)
    return parsed[0], parsed[1]


def check_known_users(session, add: list[Member]) -> None:
    """Refuse to share with a user who has no account (a typo would otherwise share with nobody,
    and later with whoever signs up under that name)."""
    names = {m.name for m in add if m.kind == "user"}
    if not names:
        return
    known = set(session.scalars(select(Account.username).where(Account.username.in_(names))))
    for i, member in enumerate(add):
        if member.kind == "user" and member.name not in known:
            raise OptionError(f"add[{i}]", f"no user is named '{member.name[:64]}'")


def includes(members, requester: Requester) -> bool:
    """Whether the requester is a member, by name or through one of their departments."""
    return shares_with_user(members, requester) or shares_with_department(members, requester)


def shares_with_user(members, requester: Requester) -> bool:
    return any(m.kind == "user" and m.name == requester.name for m in members)


def shares_with_department(members, requester: Requester) -> bool:
    return any(m.kind == "group" and m.name in requester.groups for m in members)


def apply_changes(session, rows: list, add: list[Member], remove: list[Member], make_row) -> list[Member]:
    """Add and remove member rows (``rows``: the current ones, with .kind and .name; ``make_row(member)``
    builds a new one). Adding a member twice or removing a stranger changes nothing. Returns the
    members after the change, departments first."""
    check_known_users(session, add)
    current = {Member(r.kind, r.name): r for r in rows}
    for member in add:
        if member not in current:
            current[member] = make_row(member)
            session.add(current[member])
    for member in remove:
        row = current.pop(member, None)
        if row is not None:
            session.delete(row)
    session.flush()
    return sorted(current)
