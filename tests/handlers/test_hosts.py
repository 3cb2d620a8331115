"""Maintained hosts and maintenance notices against the real hub, service, a second real Docker
engine (tests/engines.py) and a real SMTP server (aiosmtpd)."""

import re
from datetime import timedelta

import pytest

from services.models import utcnow
from tests.handlers.test_debug import create as create_session
from tests.handlers.test_debug import terminate
from tests.handlers.test_debug import wait_running as wait_session
from tests.handlers.test_jobs import submit, wait_ended
from tests.handlers.test_openapi import check
from tests.hubtools import SERVICE, ServiceClient, login_session, page_text, wait_for, xsrf_post

pytestmark = pytest.mark.integration

SECOND = "engine-two"
REGION = "second"


def job_state(api, job_id):
    return api("GET", f"/jobs/{job_id}").json()


def wait_job(api, job_id, state, timeout=60):
    return wait_for(lambda: (j := job_state(api, job_id))["state"] == state and j, timeout, f"job {job_id} {state}")


@pytest.fixture(scope="module")
def admin(hub, make_module_user):
    user = make_module_user(admin=True)
    user.api = ServiceClient(hub, user.name)
    user.web = login_session(hub, user.email, user.password)
    assert user.web.get(f"{hub.url}{SERVICE}admin/hosts", timeout=30).status_code == 200  # and its XSRF cookie
    return user


@pytest.fixture(scope="module")
def second_host(hub, admin, second_engine):
    """The second engine, added through the admin's form (and removed at the end)."""
    r = xsrf_post(admin.web, hub, f"{SERVICE}admin/hosts", {
        "name": SECOND, "region": REGION, "docker_url": second_engine.url, "gpus": "T4: 1"}, allow_redirects=True)
    assert r.status_code == 200
    assert re.search(rf"Added host {SECOND} \(Docker [\d.]+.*: \d+ cores, [\d.]+ GB\); it takes workloads now",
                     page_text(r)), page_text(r)[:3000]
    yield second_engine
    admin.api("POST", f"/admin/hosts/{SECOND}/undrain")
    assert admin.api("DELETE", f"/admin/hosts/{SECOND}").status_code in (204, 404)


def test_adding_a_host_probes_it_and_it_takes_workloads(hub, admin, second_host, make_user):
    hosts = {h["name"]: h for h in admin.api("GET", "/admin/hosts").json()["hosts"]}
    for row in hosts.values():
        check(row, "Host")  # the answers are what handlers/openapi.yaml documents
    added = hosts[SECOND]
    assert added["state"] == "online" and added["region"] == REGION and added["origin"] == "added"
    assert added["cpus"]["total"] >= 1 and added["memory_gb"]["total"] > 1
    assert added["gpus"] == [{"model": "T4", "total": 1, "used": 0}]

    # endpoints that do not answer are refused with the reason, on the form and in the API
    for url, reason in (("unix:///tmp/no-such-engine.sock", "no such file or directory"),
                        ("tcp://127.0.0.1:1", "connection refused")):
        r = xsrf_post(admin.web, hub, f"{SERVICE}admin/hosts", {"name": "ghost", "region": "x", "docker_url": url})
        assert r.status_code == 400
        assert f"docker_url: {url} does not answer as a Docker engine: {reason}" in page_text(r)
        r = admin.api("POST", "/admin/hosts", json={"name": "ghost", "region": "x", "docker_url": url})
        assert r.status_code == 400 and reason in r.json()["message"]
    r = admin.api("POST", "/admin/hosts", json={"name": "Bad Name", "region": "x", "docker_url": second_host.url})
    assert r.status_code == 400 and r.json()["message"].startswith("name: ")
    assert "ghost" not in {h["name"] for h in admin.api("GET", "/admin/hosts").json()["hosts"]}

    # a job placed in the new region runs on the new engine
    user = make_user()
    api = ServiceClient(hub, user.name)
    job = submit(api, "echo placed > /output/where.txt; sleep 3", region=REGION, gpus=1, gpu_model="T4")
    wait_job(api, job["id"], "running", timeout=120)
    engine = second_host.client()
    assert [c.labels["labdeck.id"] for c in engine.containers.list(filters={"label": f"labdeck.id={job['id']}"})] \
        == [job["id"]]
    job = wait_ended(api, job["id"], timeout=120)
    assert job["host"] == SECOND and job["end_reason"] == "succeeded", job
    assert [e["name"] for e in api("GET", f"/jobs/{job['id']}/files").json()["entries"]] == ["where.txt"]

    # refresh re-probes every host
    rows = admin.api("POST", "/admin/hosts/refresh").json()["hosts"]
    assert {r["name"]: r["state"] for r in rows}[SECOND] == "online"
    assert all(r["probed_at"] for r in rows)


def test_drain_keeps_running_work_and_queues_new_work(hub, admin, second_host, make_user):
    api = ServiceClient(hub, make_user().name)
    running = wait_job(api, submit(api, "sleep 300", region=REGION)["id"], "running")
    assert admin.api("POST", f"/admin/hosts/{SECOND}/drain").json()["state"] == "draining"
    queued = submit(api, "echo later > /output/done.txt", region=REGION)
    assert queued["state"] == "queued" and queued["position"] == 1
    r = api("POST", "/debug", json={"name": "x", "image": "labdeck/debug:latest", "region": REGION, "cpu": 0.5,
                                    "memory_gb": 0.5, "ports": 1, "password": "debug-pass-42"})
    assert r.status_code == 400
    assert f"no host in region '{REGION}' takes new work now: {SECOND} is draining" in r.json()["message"]
    assert job_state(api, running["id"])["state"] == "running"  # running work continues

    r = admin.api("DELETE", f"/admin/hosts/{SECOND}")
    assert r.status_code == 409 and running["id"] in r.json()["message"]  # not while it runs work

    admin.api("POST", f"/admin/hosts/{SECOND}/undrain")
    assert wait_ended(api, queued["id"], timeout=120)["end_reason"] == "succeeded"
    api("POST", f"/jobs/{running['id']}/terminate")


def test_query_notify_and_keep_new_work_off_the_host(hub, admin, make_user, smtp_server, debug_image):
    ann, ben = make_user(), make_user()
    ann_api, ben_api = ServiceClient(hub, ann.name), ServiceClient(hub, ben.name)
    r = hub.api("POST", f"/users/{ann.name}/server", json={"image": "labdeck/notebook:latest", "region": "default",
                                                          "cpu": 0.5, "memory_gb": 0.5})
    assert r.status_code in (201, 202), r.text
    hub.wait_for_server(ann.name)
    session = wait_session(ann_api, create_session(ann_api, name="tuning")["id"])
    job = wait_job(ben_api, submit(ben_api, "sleep 300")["id"], "running")

    found = admin.api("GET", "/admin/hosts/workloads?host=local").json()
    for row in found["workloads"]:
        check(row, "HostWorkload")
    mine = {r["id"]: r for r in found["workloads"] if r["user"] in (ann.name, ben.name)}
    assert {(r["kind"], r["email"]) for r in mine.values()} == {
        ("notebook", ann.email), ("debug", ann.email), ("job", ben.email)}
    assert session["id"] in mine and job["id"] in mine
    # by IP too: the test hosts are reached at 127.0.0.1
    assert session["id"] in {r["id"] for r in admin.api("GET", "/admin/hosts/workloads?host=127.0.0.1").json()["workloads"]}
    page = page_text(admin.web.get(f"{hub.url}{SERVICE}admin/notify?host=local", timeout=30))
    assert session["id"] in page and ben.email in page

    starts, ends = utcnow() + timedelta(hours=1), utcnow() + timedelta(hours=2)
    before = len(smtp_server.messages)
    r = xsrf_post(admin.web, hub, f"{SERVICE}admin/notify", {
        "host": "local", "starts_at": starts.strftime("%Y-%m-%dT%H:%M"), "ends_at": ends.strftime("%Y-%m-%dT%H:%M"),
        "message": "GPU driver update; servers restart"}, allow_redirects=True)
    assert "Maintenance scheduled on local" in page_text(r)
    window = admin.api("GET", "/admin/maintenance").json()["windows"][0]
    check(window, "MaintenanceWindow")
    try:
        assert {ann.name, ben.name} <= {a["user"] for a in window["affected"]}
        # the banner is on their pages, hub and service alike; not on an unaffected user's
        for user in (ann, ben):
            s = login_session(hub, user.email, user.password)
            for path in ("/hub/home", f"{SERVICE}jobs"):
                assert "GPU driver update; servers restart" in page_text(s.get(f"{hub.url}{path}", timeout=30)), path
        carol = make_user()
        s = login_session(hub, carol.email, carol.password)
        assert "GPU driver update" not in page_text(s.get(f"{hub.url}/hub/home", timeout=30))
        # one e-mail to each of the two, through the real SMTP server
        mails = wait_for(lambda: len(smtp_server.messages) >= before + 2 and smtp_server.messages[before:], 30,
                         "two e-mails")
        got = {m.to[0]: m.text for m in mails if m.to[0] in (ann.email, ben.email)}
        assert set(got) == {ann.email, ben.email}
        assert session["id"] in got[ann.email] and job["id"] in got[ben.email]
        assert "GPU driver update; servers restart" in got[ben.email]
        wait_for(lambda: admin.api("GET", "/admin/maintenance").json()["windows"][0]["emails_sent"] >= 2, 30,
                 "the sent e-mails to be recorded")

        # from now on: open-ended work is not placed there, a job that ends before the window is,
        # a job that would still run then waits
        r = ann_api("POST", "/debug", json={"name": "late", "image": "labdeck/debug:latest", "region": "default",
                                            "cpu": 0.5, "memory_gb": 0.5, "ports": 1, "password": "debug-pass-42"})
        assert r.status_code == 400 and "local has maintenance from" in r.json()["message"]
        short = submit(ben_api, "echo ok > /output/ok.txt", time_limit_min=30)
        assert wait_ended(ben_api, short["id"])["end_reason"] == "succeeded"
        long = submit(ben_api, "echo late", time_limit_min=120)
        assert long["state"] == "queued"
        assert job_state(ben_api, long["id"])["state"] == "queued"
    finally:
        assert admin.api("DELETE", f"/admin/maintenance/{window['id']}").status_code == 204
    # called off: the queued job starts, the banner is gone
    wait_ended(ben_api, long["id"])
    s = login_session(hub, ann.email, ann.password)
    assert "GPU driver update" not in page_text(s.get(f"{hub.url}/hub/home", timeout=30))
    ben_api("POST", f"/jobs/{job['id']}/terminate")
    terminate(ann_api, session["id"])
    hub.stop_server(ann.name)


ADMIN_PAGES = ["admin/hosts", "admin/notify", "admin/notify?host=local"]
ADMIN_API = [("GET", "/admin/hosts"), ("POST", "/admin/hosts"), ("POST", "/admin/hosts/refresh"),
             ("GET", "/admin/hosts/workloads?host=local"), ("POST", "/admin/hosts/local/drain"),
             ("POST", "/admin/hosts/local/undrain"), ("DELETE", "/admin/hosts/local"),
             ("GET", "/admin/maintenance"), ("POST", "/admin/maintenance"), ("DELETE", "/admin/maintenance/1")]


def test_non_admins_get_404_everywhere(hub, make_user):
    user = make_user()
    s = login_session(hub, user.email, user.password)
    assert s.get(f"{hub.url}{SERVICE}jobs", timeout=30).status_code == 200  # the service's XSRF cookie
    for path in ADMIN_PAGES:
        assert s.get(f"{hub.url}{SERVICE}{path}", timeout=30).status_code == 404, path
    for path, data in (("admin/hosts", {"name": "x", "region": "x", "docker_url": "unix:///x"}),
                       ("admin/hosts/refresh", {}), ("admin/hosts/local/drain", {}), ("admin/notify", {"host": "local"}),
                       ("admin/maintenance/1/cancel", {})):
        assert xsrf_post(s, hub, f"{SERVICE}{path}", data).status_code == 404, path
    api = ServiceClient(hub, user.name)
    for method, path in ADMIN_API:
        r = api(method, path, json={} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.status_code)
    assert not any(h.drained for h in hub.platform.resources.all_hosts())
