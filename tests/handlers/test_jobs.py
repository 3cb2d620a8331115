"""Training / evaluation jobs against the real hub, service and Docker engine."""

import io
import os
import signal
import tarfile
import time
from pathlib import Path

import pytest

from services.models import Workload
from tests.hubtools import (SERVICE, ServiceClient, containers_of, login_session, page_text, process_exited,
                            wait_for, xsrf_post)

pytestmark = pytest.mark.integration

BASE = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5, "gpus": 0}


def submit(api, command, **options):
    r = api("POST", "/jobs", json={"name": "probe", **BASE, "command": command, **options})
    assert r.status_code == 201, r.text
    return r.json()


def wait_ended(api, job_id, timeout=90):
    return wait_for(lambda: (j := api("GET", f"/jobs/{job_id}").json())["state"] == "ended" and j,
                    timeout, f"job {job_id} to end")


def read_log(api, job_id) -> str:
    text, offset = "", 0
    while True:
        chunk = api("GET", f"/jobs/{job_id}/log?offset={offset}").json()
        text += chunk["text"]
        if chunk["offset"] == offset:
            return text
        offset = chunk["offset"]


def test_job_runs_writes_output_and_keeps_its_log(hub, make_user, notebook_image):
    ada = make_user()
    api = ServiceClient(hub, ada.name)
    job = submit(api, "echo start; for i in 1 2 3; do echo line $i; sleep 0.3; done; "
                      "echo 42 > $LABDECK_OUTPUT_DIR/result.txt; mkdir /output/sub; echo deep > /output/sub/x.txt; "
                      "echo oops >&2", name="first job")
    assert job["state"] in ("queued", "starting", "running")
    seen = {job["state"]}
    deadline = time.monotonic() + 90
    while job["state"] != "ended" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = api("GET", f"/jobs/{job['id']}").json()
        seen.add(job["state"])
    assert job["state"] == "ended" and job["end_reason"] == "succeeded" and job["exit_code"] == 0
    assert "running" in seen
    assert job["submitted_at"] <= job["started_at"] <= job["ended_at"]
    assert containers_of(ada.name) == []  # removed once its log and exit status were kept

    log = read_log(api, job["id"])
    assert log.splitlines() == ["start", "line 1", "line 2", "line 3", "oops"]
    s = login_session(hub, ada.name, ada.password)
    listing = page_text(s.get(f"{hub.url}{SERVICE}jobs/{job['id']}/files/", timeout=30))
    assert "result.txt" in listing and "sub" in listing
    preview = page_text(s.get(f"{hub.url}{SERVICE}jobs/{job['id']}/files/result.txt", timeout=30))
    assert "42" in preview
    download = s.get(f"{hub.url}{SERVICE}jobs/{job['id']}/files/sub/x.txt?download=1", timeout=30)
    assert download.content == b"deep\n" and "attachment" in download.headers["Content-Disposition"]
    archive = s.get(f"{hub.url}{SERVICE}jobs/{job['id']}/archive", timeout=60)
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[-1] for m in tar.getmembers()}
        assert {"result.txt", "sub/x.txt"} <= names
        member = next(m for m in tar.getmembers() if m.name.endswith("result.txt"))
        assert tar.extractfile(member).read() == b"42\n"
    raw = s.get(f"{hub.url}{SERVICE}jobs/{job['id']}/log.txt", timeout=30)
    assert raw.status_code == 200 and b"line 3" in raw.content


def test_failed_terminated_and_timed_out_jobs(hub, make_user, notebook_image):
    bea = make_user()
    api = ServiceClient(hub, bea.name)
    failed = submit(api, "echo about to fail; exit 3")
    endless = submit(api, "sleep 300")
    limited = submit(api, "sleep 300", time_limit_min=0.1)
    assert wait_ended(api, failed["id"])["end_reason"] == "failed with exit code 3"
    wait_for(lambda: api("GET", f"/jobs/{endless['id']}").json()["state"] == "running", 60, "the job to run")
    ended = api("POST", f"/jobs/{endless['id']}/terminate").json()
    assert ended["state"] == "ended" and ended["end_reason"] == "terminated by user"
    assert wait_ended(api, limited["id"], timeout=60)["end_reason"] == "exceeded time limit (0.1 min)"
    assert "about to fail" in read_log(api, failed["id"])
    assert containers_of(bea.name) == []


def test_five_gpu_jobs_share_two_gpus_in_order(hub, make_user, notebook_image):
    users = [make_user() for _ in range(5)]
    apis = [ServiceClient(hub, u.name) for u in users]
    jobs = [submit(api, "sleep 3; echo ok", gpus=1, gpu_model="A100", name=f"gpu job {i}") for i, api in enumerate(apis)]
    ids = [j["id"] for j in jobs]
    admin = ServiceClient(hub, "admin")
    most, positions_seen = 0, set()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        listed = {j["id"]: j for j in admin("GET", "/jobs?all=1").json()["jobs"] if j["id"] in ids}
        active = [j for j in listed.values() if j["state"] in ("starting", "running")]
        most = max(most, len(active))
        positions_seen |= {j["position"] for j in listed.values() if j["state"] == "queued"}
        if all(j["state"] == "ended" for j in listed.values()):
            break
        time.sleep(0.25)
    assert most == 2
    assert positions_seen >= {1, 2}  # the list showed queue positions meanwhile
    finished = [apis[i]("GET", f"/jobs/{ids[i]}").json() for i in range(5)]
    assert [j["end_reason"] for j in finished] == ["succeeded"] * 5
    starts = [j["started_at"] for j in finished]
    assert starts[2] >= max(starts[:2]) and starts[4] >= starts[2]  # first come, first served


def test_jobs_survive_a_service_restart_and_the_queue_keeps_its_order(hub, make_user, notebook_image):
    users = [make_user() for _ in range(4)]
    apis = [ServiceClient(hub, u.name) for u in users]
    # the two hold their GPUs until the test lets them go: a restart takes long on a busy machine
    running = [submit(apis[i], "until [ -e /output/go ]; do sleep 0.2; done; echo finished > /output/done.txt; echo bye",
                      gpus=1, gpu_model="A100") for i in range(2)]
    queued = [submit(apis[i], "echo quick", gpus=1, gpu_model="A100") for i in (2, 3)]
    assert [apis[2]("GET", f"/jobs/{queued[0]['id']}").json()["position"],
            apis[3]("GET", f"/jobs/{queued[1]['id']}").json()["position"]] == [1, 2]
    # the service stops by itself (as the hub's SIGINT asks) though its jobs run on, quiet: a log
    # follower blocked on a job's stream used to keep it alive until the hub killed it
    (service,) = hub.service_pids()
    os.kill(service, signal.SIGINT)
    wait_for(lambda: process_exited(service), 8, "the service to exit after SIGINT")
    hub.restart()  # the service starts again with the hub

    apis = [ServiceClient(hub, u.name) for u in users]
    # the GPUs are still held: the two wait, in the order they were submitted
    assert [apis[2]("GET", f"/jobs/{queued[0]['id']}").json()["position"],
            apis[3]("GET", f"/jobs/{queued[1]['id']}").json()["position"]] == [1, 2]
    folder = Path(hub.platform.jobs.storage_root)
    for job in running:
        (next(folder.rglob(f"{job['id']}/output")) / "go").touch()
    for api, job in zip(apis, running + queued):
        done = wait_ended(api, job["id"], timeout=120)
        assert done["end_reason"] == "succeeded", done
    for api, job in zip(apis[:2], running):
        assert "bye" in read_log(api, job["id"])
        assert any(folder.rglob(f"{job['id']}/output/done.txt"))


def test_other_users_get_404_and_paths_cannot_escape(hub, make_user, notebook_image):
    owner, other = make_user(), make_user()
    mine, theirs = ServiceClient(hub, owner.name), ServiceClient(hub, other.name)
    job = wait_ended(mine, submit(mine, "ln -s /etc/passwd /output/pw; ln -s / /output/root; echo hi > /output/ok")["id"])
    jid = job["id"]
    for method, path in (("GET", f"/jobs/{jid}"), ("GET", f"/jobs/{jid}/log"), ("POST", f"/jobs/{jid}/terminate"),
                         ("DELETE", f"/jobs/{jid}")):
        assert theirs(method, path).status_code == 404, path
    s = login_session(hub, other.name, other.password)
    for path in ("files/", "files/ok", "archive", "log", "log.txt"):
        assert s.get(f"{hub.url}{SERVICE}jobs/{jid}/{path}", timeout=30).status_code == 404, path

    me = login_session(hub, owner.name, owner.password)
    base = f"{hub.url}{SERVICE}jobs/{jid}/files/"
    assert me.get(base + "ok", timeout=30).status_code == 200
    # (a plain "../" in a URL is resolved before it reaches labdeck; encoded slashes are not)
    for escape in ("pw", "root/etc/passwd", "..%2Flog.txt", "ok%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd"):
        r = me.get(base + escape, timeout=30)
        assert r.status_code in (400, 404) and "root:" not in r.text, escape


def test_bad_input_leaves_nothing_and_clone_and_batch_delete(hub, make_user, notebook_image):
    cy = make_user()
    api = ServiceClient(hub, cy.name)
    for bad, message in (({"command": ""}, "command: give the command to run"),
                         ({"time_limit_min": 0}, "time_limit_min: must be a number of minutes from 0.1"),
                         ({"image": "labdeck/debug:latest"}, "image: 'labdeck/debug:latest' is not available"),
                         ({"mounts": [{"host_path": "~", "container_path": "/output"}]},
                          "mounts[0].container_path: /output is where the job's output folder appears")):
        r = api("POST", "/jobs", json={"name": "bad", **BASE, "command": "true", **bad})
        assert r.status_code == 400 and message in r.json()["message"], (bad, r.text)
    assert api("GET", "/jobs").json() == {"jobs": []}
    assert not (Path(hub.platform.jobs.storage_root) / cy.name).exists()

    one = wait_ended(api, submit(api, "echo one > /output/a", name="one")["id"])
    two = wait_ended(api, submit(api, "echo two", name="two")["id"])
    s = login_session(hub, cy.name, cy.password)
    form = page_text(s.get(f"{hub.url}{SERVICE}jobs/new?from={one['id']}", timeout=30))
    assert "echo one &gt; /output/a" in form and 'value="one (again)"' in form
    folder = Path(hub.platform.jobs.storage_root)
    assert len(list(folder.rglob(one["id"]))) == 1
    r = xsrf_post(s, hub, f"{SERVICE}jobs/delete", {"ids": [one["id"], two["id"]]})
    assert r.status_code == 302
    assert api("GET", "/jobs").json() == {"jobs": []}
    assert list(folder.rglob(one["id"])) == [] and list(folder.rglob(two["id"])) == []
    with hub.platform.db.session() as db:
        assert db.query(Workload).filter_by(user=cy.name).count() == 0
