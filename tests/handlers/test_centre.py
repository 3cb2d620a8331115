"""The personal centre against the real hub, service and Docker engine: own workloads with host
and region, usage, notifications and the banners on hub and service pages."""

import re
from html import unescape
from datetime import timedelta

import pytest
from sqlalchemy import update

from services.models import Notification, utcnow
from services.notifications import notify
from tests.handlers.test_debug import create, terminate, wait_running
from tests.handlers.test_jobs import submit
from tests.handlers.test_jobs import wait_ended as wait_job_ended
from tests.handlers.test_openapi import check
from tests.hubtools import SERVICE, ServiceClient, login_session, page_text, xsrf_post

pytestmark = pytest.mark.integration


def cpu_hours_shown(html: str) -> str:
    return re.search(r'id="cpu-hours">([^<]*)<', html).group(1).strip()


def test_own_workloads_with_host_region_and_usage(hub, make_user, debug_image, notebook_image):
    ann = make_user(groups=("centre-dept",))
    api = ServiceClient(hub, ann.name)
    job = wait_job_ended(api, submit(api, "sleep 2; echo done", name="centre job")["id"])
    assert job["end_reason"] == "succeeded"
    session = wait_running(api, create(api, name="centre session")["id"])
    try:
        me = api("GET", "/me").json()
        assert me == {"name": ann.name, "email": ann.email, "departments": ["centre-dept"], "admin": False}
        check(me, "Me")

        (listed,) = api("GET", "/me/workloads").json()["workloads"]  # the ended job is not running
        assert (listed["id"], listed["kind"], listed["state"]) == (session["id"], "debug", "running")
        assert (listed["host"], listed["region"]) == ("local", "default")
        assert listed["url"] == f"{SERVICE}debug/{session['id']}/open"
        assert listed["resources"] == {"cpu": 0.5, "memory_gb": 0.5, "gpus": 0, "gpu_model": None}
        check(listed, "MyWorkload")

        used = api("GET", "/me/usage").json()
        assert used["workloads"] == 2 and used["cpu_hours"] > 0 and used["gpu_hours"] == {}
        assert used["holdings"]["cpu"] == {"used": 0.5, "limit": 2, "percent": 25.0}
        check(used, "Usage")

        s = login_session(hub, ann.name, ann.password)
        page = s.get(f"{hub.url}{SERVICE}centre", timeout=30)
        html = page_text(page)
        assert page.status_code == 200 and session["id"] in html and "centre session" in html
        assert '<td class="workload-host">local</td>' in html and '<td class="workload-region">default</td>' in html
        assert cpu_hours_shown(html) not in ("0", "")
        assert ann.email in html and "centre-dept" in html and 'href="/hub/change-password"' in html
        assert 'class="nav-link active"' in html and ">Personal centre<" in html

        bob = make_user()
        other = ServiceClient(hub, bob.name)
        assert other("GET", "/me/workloads").json() == {"workloads": []}
        assert other("GET", "/me/usage").json()["cpu_hours"] == 0
        bob_page = page_text(login_session(hub, bob.name, bob.password).get(f"{hub.url}{SERVICE}centre", timeout=30))
        assert session["id"] not in bob_page and "Nothing is running." in bob_page
        assert cpu_hours_shown(bob_page) == "0"
    finally:
        terminate(api, session["id"])


def add_notes(hub, user, other):
    now = utcnow()
    with hub.platform.db.session() as s:
        notes = {
            "old": notify(s, user, "Welcome", "Your account is ready."),
            "banner": notify(s, user, "Maintenance of host local", "Save your work.\nThe host restarts.",
                             banner=True, expires_at=now + timedelta(hours=2)),
            "expired": notify(s, user, "Old maintenance", "Long over.", banner=True,
                              expires_at=now - timedelta(minutes=1)),
            "others": notify(s, other, "Someone else's maintenance", "Not yours.", banner=True),
        }
        s.flush()
        return {key: note.id for key, note in notes.items()}


def test_notifications_unread_first_and_only_the_owner_marks_them(hub, make_user):
    ann, bob = make_user(), make_user()
    ids = add_notes(hub, ann.name, bob.name)
    api = ServiceClient(hub, ann.name)
    listed = api("GET", "/me/notifications").json()
    assert listed["unread"] == 3 and {n["id"] for n in listed["notifications"]} == {
        ids["old"], ids["banner"], ids["expired"]}
    for note in listed["notifications"]:
        check(note, "Notification")

    r = api("POST", "/me/notifications/read", json={"ids": [ids["old"], ids["others"]]})
    assert r.status_code == 200 and r.json() == {"marked": 1, "unread": 2}
    order = [(n["id"], n["read"]) for n in api("GET", "/me/notifications").json()["notifications"]]
    assert order[-1] == (ids["old"], True) and all(not read for _, read in order[:-1])
    bobs = ServiceClient(hub, bob.name)("GET", "/me/notifications").json()
    assert bobs["unread"] == 1 and bobs["notifications"][0]["title"] == "Someone else's maintenance"

    for body, field in [({"ids": "1"}, "ids"), ({"ids": []}, "ids"), ({"ids": [True]}, "ids"), ({}, "ids")]:
        r = api("POST", "/me/notifications/read", json=body)
        assert r.status_code == 400 and r.json()["message"].startswith(f"{field}:"), (body, r.text)
    r = api("POST", "/me/notifications/read", json={"all": True})
    assert r.json() == {"marked": 2, "unread": 0}


def banners_in(html: str) -> list[str]:
    return [unescape(t) for t in re.findall(r'<strong class="banner-title">([^<]*)</strong>', html)]


def test_banners_on_hub_and_service_pages_until_read_or_expired(hub, make_user):
    ann, bob = make_user(), make_user()
    ids = add_notes(hub, ann.name, bob.name)
    s = login_session(hub, ann.name, ann.password)

    home = page_text(s.get(f"{hub.url}/hub/home", timeout=30))
    assert banners_in(home) == ["Maintenance of host local"]
    assert "Save your work." in home and "Until " in home and " UTC" in home
    assert f'href="{SERVICE}centre#notifications">Dismiss in your personal centre' in home
    debug_page = page_text(s.get(f"{hub.url}{SERVICE}debug", timeout=30))
    assert banners_in(debug_page) == ["Maintenance of host local"] and "dismiss-banner" in debug_page

    # dismissing goes back to the page it was on, and never to another site
    r = xsrf_post(s, hub, f"{SERVICE}centre/notifications/read", {"id": str(ids["banner"]), "next": f"{SERVICE}debug"})
    assert r.status_code == 302 and r.headers["Location"] == f"{SERVICE}debug"
    assert banners_in(page_text(s.get(f"{hub.url}/hub/home", timeout=30))) == []
    assert banners_in(page_text(s.get(f"{hub.url}{SERVICE}debug", timeout=30))) == []
    for bad in ("https://evil.example.org/x", "//evil.example.org/x", "/hub/home", f"{SERVICE}../../hub/home"):
        r = xsrf_post(s, hub, f"{SERVICE}centre/notifications/read", {"id": str(ids["banner"]), "next": bad})
        assert r.status_code == 302 and r.headers["Location"] == f"{SERVICE}centre", bad
    # someone else's notification cannot be dismissed: bob still sees his
    xsrf_post(s, hub, f"{SERVICE}centre/notifications/read", {"id": str(ids["others"])})
    bob_home = page_text(login_session(hub, bob.name, bob.password).get(f"{hub.url}/hub/home", timeout=30))
    assert banners_in(bob_home) == ["Someone else's maintenance"]

    # a banner goes away by itself when its window ends
    with hub.platform.db.session() as db:
        late = notify(db, ann.name, "Window closing", "Soon over.", banner=True,
                      expires_at=utcnow() + timedelta(hours=1))
        db.flush()
        late_id = late.id
    assert banners_in(page_text(s.get(f"{hub.url}{SERVICE}centre", timeout=30))) == ["Window closing"]
    with hub.platform.db.session() as db:
        db.execute(update(Notification).where(Notification.id == late_id)
                   .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert banners_in(page_text(s.get(f"{hub.url}{SERVICE}centre", timeout=30))) == []
    assert banners_in(page_text(s.get(f"{hub.url}/hub/home", timeout=30))) == []

    # the centre's forms: mark all read, then back to the centre with a notice
    r = xsrf_post(s, hub, f"{SERVICE}centre/notifications/read", {"all": "1"})
    assert r.status_code == 302 and r.headers["Location"] == f"{SERVICE}centre"
    centre = page_text(s.get(f"{hub.url}{SERVICE}centre", timeout=30))
    assert "notifications as read." in centre and 'id="mark-all-read"' not in centre
    assert ServiceClient(hub, ann.name)("GET", "/me/notifications").json()["unread"] == 0


def test_a_malformed_month_is_refused_naming_it(hub, make_user):
    cid = make_user()
    api = ServiceClient(hub, cid.name)
    for month in ("2026-13", "march", "2026-1"):
        r = api("GET", f"/me/usage?month={month}")
        assert r.status_code == 400 and r.json()["message"].startswith("month:"), r.text
        check(r.json(), "Error")
    r = api("GET", "/me/usage?month=2020-02")
    assert r.status_code == 200 and r.json()["month"] == "2020-02" and r.json()["cpu_hours"] == 0
    s = login_session(hub, cid.name, cid.password)
    page = s.get(f"{hub.url}{SERVICE}centre?month=<b>x</b>", timeout=30)
    assert page.status_code == 400 and "month: give a month as YYYY-MM" in page_text(page)
    assert "<b>x</b>" not in page_text(page)
