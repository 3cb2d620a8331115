"""Notifications: messages to one user, shown in the personal centre (unread first) and, for
banners, at the top of every hub and platform page until the user dismisses them (marks them
read) or they expire (a maintenance window's end)."""

from datetime import datetime

from sqlalchemy import or_, select, update

from .models import Notification, utcnow

MAX_LISTED = 200


def notify(session, user: str, title: str, message: str, *, banner: bool = False,
           expires_at: datetime | None = None, window_id: int | None = None) -> Notification:
    """Add a notification in the caller's transaction (so it exists exactly when its cause does)."""
    note = Notification(user=user, title=title[:255], message=message, banner=banner,
                        expires_at=expires_at, window_id=window_id)
    session.add(note)
    return note


def view(note: Notification) -> dict:
    return {"id": note.id, "title": note.title, "message": note.message, "banner": note.banner,
            "created_at": note.created_at, "expires_at": note.expires_at, "read": note.read_at is not None,
            "read_at": note.read_at}


def banners_for(db, user: str, now: datetime | None = None) -> list[dict]:
    """Banners this user has not dismissed and that have not expired, newest first."""
    now = now or utcnow()
    with db.read() as s:
        rows = s.scalars(select(Notification).where(
            Notification.user == user, Notification.banner.is_(True), Notification.read_at.is_(None),
            or_(Notification.expires_at.is_(None), Notification.expires_at > now),
        ).order_by(Notification.created_at.desc(), Notification.id.desc()).limit(5))
        return [view(n) for n in rows]


def list_for(db, user: str) -> dict:
    """Unread first, then read; newest first within each."""
    with db.read() as s:
        rows = list(s.scalars(select(Notification).where(Notification.user == user)
                              .order_by(Notification.read_at.is_not(None), Notification.created_at.desc(),
                                        Notification.id.desc()).limit(MAX_LISTED)))
        return {"unread": sum(1 for n in rows if n.read_at is None), "notifications": [view(n) for n in rows]}


def mark_read(db, user: str, ids: list[int] | None = None) -> int:
    """Mark this user's notifications read (all of them when ``ids`` is None); returns how many
    changed. Other users' IDs change nothing."""
    with db.session() as s:
        stmt = update(Notification).where(Notification.user == user, Notification.read_at.is_(None))
        if ids is not None:
            stmt = stmt.where(Notification.id.in_(ids))
        return s.execute(stmt.values(read_at=utcnow()).execution_options(synchronize_session=False)).rowcount
