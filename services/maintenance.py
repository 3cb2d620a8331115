"""Who runs where, and telling them about maintenance (the admin's "user notification").

An admin names a host (or a server IP) and sees every workload on it with its owner's e-mail;
then submits a maintenance window. Each affected user gets one banner notification (until they
dismiss it or the window ends) and, when SMTP is configured, one e-mail. From submission on,
placement keeps new work off the host (:func:`services.hosts.closed_hosts`).
"""

from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from .errors import OptionError
from .models import Account, Cache, CacheState, MaintenanceWindow, Notification, Workload, WorkloadState, utcnow
from .notifications import notify

MAX_MESSAGE = 2000
MAX_WINDOW = timedelta(days=30)
KIND_TITLES = {"notebook": "notebook server", "debug": "debug session", "job": "job", "cache": "cache task"}


def resolve_hosts(platform, target: str) -> list:
    """The hosts a name or an IP address (a host's address) names; OptionError if none."""
    target = (target or "").strip()
    if not target:
        raise OptionError("host", "enter a host name or a server IP address")
    hosts = platform.resources.all_hosts()
    named = [h for h in hosts if h.name == target]
    found = named or [h for h in hosts if h.address == target]
    if not found:
        known = ", ".join(f"{h.name} ({h.address})" for h in hosts)
        raise OptionError("host", f"no host is named or reached at '{target[:100]}'; hosts: {known}")
    return found


def workloads_on(platform, hosts) -> list[dict]:
    """Every workload on these hosts that has not ended, and the cache tasks copying into their
    regions' storage, with the owner's e-mail."""
    names = [h.name for h in hosts]
    regions = {h.region for h in hosts}
    with platform.db.session() as s:
        emails = dict(s.execute(select(Account.username, Account.email)).all())
        rows = [{"id": w.id, "kind": w.kind, "kind_title": KIND_TITLES.get(w.kind, w.kind), "name": w.name,
                 "user": w.user, "email": emails.get(w.user, ""), "host": w.host, "region": w.region,
                 "state": w.state, "started_at": w.started_at or w.created_at}
                for w in s.scalars(select(Workload).where(Workload.host.in_(names),
                                                          Workload.state != WorkloadState.ended.value)
                                   .order_by(Workload.created_at))]
        for c in s.scalars(select(Cache).where(Cache.region.in_(regions), Cache.state.in_(
                (CacheState.queued.value, CacheState.copying.value))).order_by(Cache.created_at)):
            rows.append({"id": c.id, "kind": "cache", "kind_title": KIND_TITLES["cache"], "name": c.name,
                         "user": c.owner, "email": emails.get(c.owner, ""), "host": f"region {c.region}",
                         "region": c.region, "state": c.state, "started_at": c.started_at or c.created_at})
    return rows


def parse_time(raw, field: str) -> datetime:
    """ISO 8601 (``2026-12-01T10:00``, the form's value, read as UTC; or with Z / an offset)."""
    if not isinstance(raw, str) or not raw.strip():
        raise OptionError(field, "give a date and time, e.g. 2026-12-24T08:00 (UTC)")
    text = raw.strip().replace("Z", "+00:00")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise OptionError(field, f"'{raw[:40]}' is not a date and time like 2026-12-24T08:00 (UTC)") from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.replace(microsecond=0)


def check_window(raw: dict, now: datetime) -> tuple[datetime, datetime, str]:
    starts, ends = parse_time(raw.get("starts_at"), "starts_at"), parse_time(raw.get("ends_at"), "ends_at")
    if ends <= starts:
        raise OptionError("ends_at", "must be after the start")
    if ends <= now:
        raise OptionError("ends_at", "is in the past; a window must end in the future")
    if ends - starts > MAX_WINDOW:
        raise OptionError("ends_at", "a window lasts at most 30 days")
    message = raw.get("message")
    if not isinstance(message, str) or not message.strip():
        raise OptionError("message", "tell users what happens, e.g. 'GPU driver update; servers restart'")
    if len(message) > MAX_MESSAGE:
        raise OptionError("message", f"must be at most {MAX_MESSAGE} characters")
    return starts, ends, message.strip()


def schedule(platform, admin: str, raw: dict) -> dict:
    """Record the window on each named host and notify the owners of what runs there.
    Returns the window(s), the affected workloads, and the e-mails to send."""
    hosts = resolve_hosts(platform, raw.get("host"))
    starts, ends, message = check_window(raw, utcnow())
    affected = workloads_on(platform, hosts)
    by_user: dict[str, list[dict]] = {}
    for row in affected:
        by_user.setdefault(row["user"], []).append(row)
    names = ", ".join(h.name for h in hosts)
    when = f"{starts:%Y-%m-%d %H:%M} to {ends:%Y-%m-%d %H:%M} UTC"
    mails = []
    with platform.db.session() as s:
        windows = []
        for host in hosts:
            window = MaintenanceWindow(host=host.name, starts_at=starts, ends_at=ends, message=message,
                                       affected=[{k: r[k] for k in ("id", "kind", "user", "email")}
                                                 for r in affected if r["host"] in (host.name, f"region {host.region}")],
                                       created_by=admin)
            s.add(window)
            windows.append(window)
        s.flush()
        for user, rows in by_user.items():
            tasks = "; ".join(f"{r['kind_title']} {r['id']}" + (f" ({r['name']})" if r["name"] else "") for r in rows)
            body = (f"{message}\n\nYour work there: {tasks}. Save what you need before it starts; "
                    f"new work goes to other hosts.")
            notify(s, user, f"Maintenance on {names}: {when}", body, banner=True, expires_at=ends,
                   window_id=windows[0].id)
            if rows[0]["email"]:
                mails.append((rows[0]["email"], f"[labdeck] Maintenance on {names}, {when}",
                              f"Host {names} is under maintenance from {when}.\n\n{body}"))
        result = {"windows": [window_view(w) for w in windows], "affected": affected,
                  "users": sorted(by_user)}
    return {**result, "mails": mails}


def record_mail_result(platform, window_ids: list[int], sent: int, error: str | None) -> None:
    with platform.db.session() as s:
        for window_id in window_ids:
            window = s.get(MaintenanceWindow, window_id)
            if window is not None:
                window.emails_sent, window.email_error = sent, error


def window_view(w: MaintenanceWindow) -> dict:
    return {"id": w.id, "host": w.host, "starts_at": w.starts_at, "ends_at": w.ends_at, "message": w.message,
            "affected": w.affected, "emails_sent": w.emails_sent, "email_error": w.email_error,
            "created_by": w.created_by, "created_at": w.created_at}


def windows(platform, include_past: bool = False) -> list[dict]:
    with platform.db.session() as s:
        query = select(MaintenanceWindow).order_by(MaintenanceWindow.starts_at.desc())
        if not include_past:
            query = query.where(MaintenanceWindow.ends_at > utcnow())
        return [window_view(w) for w in s.scalars(query.limit(200))]


def cancel(platform, window_id: int) -> dict:
    """Call a window off: placement ignores it again and its banners end now (the notices stay
    in the users' lists). LookupError if there is no such window."""
    with platform.db.session() as s:
        window = s.get(MaintenanceWindow, window_id)
        if window is None:
            raise LookupError(window_id)
        view = window_view(window)
        now = utcnow()
        s.execute(update(Notification).where(Notification.window_id == window_id)
                  .values(expires_at=now).execution_options(synchronize_session=False))
        s.delete(window)
    return view
