"""High-speed cache against the real hub, service and Docker (copies throttled to 25 MiB/s
by the test config, so they can be watched and interrupted)."""

import hashlib
import os
import secrets
import time
from pathlib import Path

import pytest

from services.models import CacheFile
from tests.hubtools import SERVICE, ServiceClient, login_session, page_text, wait_for, xsrf_post

pytestmark = pytest.mark.integration

JOB = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 0.5, "memory_gb": 0.5, "gpus": 0}


def make_tree(root: Path, small: int = 300, large: int = 2, large_mb: int = 8,
              small_max: int = 4096) -> dict[str, str]:
    """Many small files (up to ``small_max`` bytes) and a few large ones; returns
    {relative path: sha256}."""
    hashes = {}
    for i in range(small):
        path = root / f"part{i % 7}" / f"f{i:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(64 + (i * 37) % small_max)
        path.write_bytes(data)
        hashes[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    for i in range(large):
        path = root / f"big{i}.dat"
        data = os.urandom(large_mb * 2**20)
        path.write_bytes(data)
        hashes[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return hashes


def create(api, **body):
    r = api("POST", "/caches", json={"name": "data", "region": "default", **body})
    assert r.status_code == 201, r.text
    return r.json()


def wait_state(api, cache_id, states=("ready", "failed", "cancelled"), timeout=120):
    return wait_for(lambda: (c := api("GET", f"/caches/{cache_id}").json())["state"] in states and c,
                    timeout, f"cache {cache_id} to be {'/'.join(states)}")


def run_job(api, command, mounts, timeout=120):
    r = api("POST", "/jobs", json={"name": "reader", **JOB, "command": command, "mounts": mounts})
    assert r.status_code == 201, r.text
    job = wait_for(lambda: (j := api("GET", f"/jobs/{r.json()['id']}").json())["state"] == "ended" and j,
                   timeout, "the job to end")
    log, offset = "", 0
    while True:
        chunk = api("GET", f"/jobs/{job['id']}/log?offset={offset}").json()
        log += chunk["text"]
        if chunk["offset"] == offset:
            return job, log
        offset = chunk["offset"]


def test_cache_a_directory_watch_progress_and_mount_it_read_only(hub, make_user, notebook_image):
    ann = make_user()
    storage = Path(hub.platform.paths.user_storage(ann.name))
    hashes = make_tree(storage / "dataset")
    api = ServiceClient(hub, ann.name)
    cache = create(api, name="my data", source="~/dataset", description="300 small, 2 large")
    assert cache["progress"]["files_total"] == len(hashes)
    assert cache["progress"]["bytes_total"] == sum((storage / "dataset" / p).stat().st_size for p in hashes)

    seen = []
    while True:
        c = api("GET", f"/caches/{cache['id']}").json()
        seen.append((c["progress"]["bytes_done"], c["progress"]["files_done"], c["progress"]["percent"]))
        if c["state"] in ("ready", "failed"):
            break
        time.sleep(0.1)
    assert c["state"] == "ready", c
    assert seen == sorted(seen)  # never goes backwards
    assert seen[-1] == (c["progress"]["bytes_total"], len(hashes), 100.0)
    assert any(0 < p < 100 for _, _, p in seen)  # it was watched on the way

    # the ready cache is offered in the path-mapping pickers, read-only
    roots = api("GET", "/jobs/options").json()["roots"]
    (root,) = [r for r in roots if r["name"] == f"cache:{cache['id']}"]
    assert root["read_only"] is True
    job, log = run_job(api, "cd /data && find . -type f | sort | xargs sha256sum; touch /data/x 2>&1; true",
                       [{"host_path": root["path"], "container_path": "/data", "read_only": True}])
    assert job["end_reason"] == "succeeded"
    copied = {line.split()[1][2:]: line.split()[0] for line in log.splitlines() if line.count(" ") == 2 and "./" in line}
    assert copied == hashes  # byte for byte
    assert "Read-only file system" in log
    r = api("POST", "/jobs", json={"name": "rw", **JOB, "command": "true",
                                   "mounts": [{"host_path": root["path"], "container_path": "/data", "read_only": False}]})
    assert r.status_code == 400 and "mark it read-only" in r.json()["message"]
    usage = api("GET", f"/caches/{cache['id']}").json()["usage"]
    assert [u["workload"] for u in usage] == [job["id"]]


def test_cache_from_an_http_server(hub, make_user, data_server):
    bo = make_user()
    payload = os.urandom(3 * 2**20 + 123)
    (data_server.root / "weights.bin").write_bytes(payload)
    api = ServiceClient(hub, bo.name)
    cache = wait_state(api, create(api, name="weights", source=data_server.url + "weights.bin")["id"])
    assert cache["state"] == "ready" and cache["progress"]["bytes_total"] == len(payload)
    with hub.platform.db.session() as s:
        from services.models import Cache
        path = Path(s.get(Cache, cache["id"]).path)
    assert (path / "weights.bin").read_bytes() == payload


BAD_SOURCES = [
    ("~/../../etc", "must not contain '..'"),
    ("/etc/passwd", "system directory"),
    ("~/link-out", "symbolic link that leads outside"),
    ("~/missing", "does not exist"),
    ("ftp://127.0.0.1/x", "the scheme 'ftp' is not allowed"),
    ("http://example.org/data/x", "the host 'example.org' is not allowed"),
    ("", "give a directory or file"),
]


@pytest.mark.parametrize("source, message", BAD_SOURCES, ids=[m.split()[0] + str(i) for i, (_, m) in enumerate(BAD_SOURCES)])
def test_bad_sources_are_refused(hub, make_user, source, message):
    cy = make_user()
    storage = Path(hub.platform.paths.user_storage(cy.name))
    (storage / "link-out").symlink_to("/etc")
    api = ServiceClient(hub, cy.name)
    r = api("POST", "/caches", json={"name": "bad", "region": "default", "source": source})
    assert r.status_code == 400, r.text
    assert r.json()["message"].startswith("source: ") and message in r.json()["message"]
    assert api("GET", "/caches").json() == {"private": [], "shared": [], "department": []}


def test_capacity_and_quota_are_checked_before_copying(hub, make_user):
    dee = make_user()
    storage = Path(hub.platform.paths.user_storage(dee.name))
    with open(storage / "huge.img", "wb") as f:
        f.truncate(2 * 2**30)  # sparse: 2 GiB of nothing
    with open(storage / "bigger.img", "wb") as f:
        f.truncate(6 * 2**30)
    api = ServiceClient(hub, dee.name)
    r = api("POST", "/caches", json={"name": "too big", "region": "east", "source": "~/huge.img"})
    assert r.status_code == 400
    assert "2 GB does not fit in the cache of region 'east': 0 GB of 1 GB are already used" in r.json()["message"]
    r = api("POST", "/caches", json={"name": "over quota", "region": "default", "source": "~/bigger.img"})
    assert r.status_code == 400
    assert "6 GB would exceed your cache quota of 5 GB (0 GB already in your caches)" in r.json()["message"]
    assert api("GET", "/caches").json()["private"] == []


def test_cancel_frees_the_space_and_the_same_source_is_offered_not_copied_again(hub, make_user):
    eve = make_user()
    storage = Path(hub.platform.paths.user_storage(eve.name))
    make_tree(storage / "slow", small=20, large=3, large_mb=40)  # ~120 MiB: ~5 s at 25 MiB/s
    api = ServiceClient(hub, eve.name)
    first = create(api, name="slow", source="~/slow")
    dup = api("POST", "/caches", json={"name": "again", "region": "default", "source": "~/slow/"})
    assert dup.status_code == 409 and dup.json()["existing"]["id"] == first["id"]
    assert "already cached in region 'default' as 'slow'" in dup.json()["message"]

    wait_for(lambda: api("GET", f"/caches/{first['id']}").json()["progress"]["bytes_done"] > 0, 30, "copying")
    cancelled = api("POST", f"/caches/{first['id']}/cancel")
    assert cancelled.status_code == 200
    done = wait_state(api, first["id"], states=("cancelled",))
    assert done["state"] == "cancelled"
    cache_dir = Path(hub.platform.cache_settings.region_storage("default")[0]) / first["id"]
    assert not cache_dir.exists()
    # a cancelled cache is no longer offered; copying anyway makes a second one
    again = api("POST", "/caches", json={"name": "again", "region": "default", "source": "~/slow"})
    assert again.status_code == 201
    api("POST", f"/caches/{again.json()['id']}/cancel")


def test_restart_mid_copy_resumes_without_recopying(hub, make_user):
    fay = make_user()
    storage = Path(hub.platform.paths.user_storage(fay.name))
    # ~270 MiB, ~11 s at 25 MiB/s. The small files carry half of it: they are copied beside the
    # large ones, and once those end the rest still takes seconds, so the stop lands mid-copy
    # (with 4 KiB small files the copy once finished between the 20th file and the stop)
    make_tree(storage / "resume", small=150, large=2, large_mb=60, small_max=2 * 2**20)
    api = ServiceClient(hub, fay.name)
    cache = create(api, name="resume me", source="~/resume")
    wait_for(lambda: api("GET", f"/caches/{cache['id']}").json()["progress"]["files_done"] >= 20, 30, "some files")
    hub.stop()
    with hub.platform.db.session() as s:
        done_before = [f.rel for f in s.query(CacheFile).filter_by(cache_id=cache["id"], done=True)]
        from services.models import Cache
        target = Path(s.get(Cache, cache["id"]).path)
    assert 0 < len(done_before) < 152
    stamps = {rel: ((target / rel).stat().st_ino, (target / rel).stat().st_mtime_ns) for rel in done_before}
    hub.start()

    api = ServiceClient(hub, fay.name)
    assert wait_state(api, cache["id"])["state"] == "ready"
    again = {rel: ((target / rel).stat().st_ino, (target / rel).stat().st_mtime_ns) for rel in done_before}
    assert again == stamps  # finished files were not copied again
    assert sum(1 for p in target.rglob("*") if p.is_file()) == 152


def test_sharing_members_usage_and_in_use_refusal(hub, make_user, notebook_image):
    owner = make_user()
    member = make_user()
    department = f"vision-{secrets.token_hex(3)}"
    colleague = make_user(groups=[department])
    stranger = make_user()
    storage = Path(hub.platform.paths.user_storage(owner.name))
    (storage / "shared-set").mkdir()
    (storage / "shared-set" / "labels.csv").write_text("cat,dog\n")
    api = ServiceClient(hub, owner.name)
    cache = wait_state(api, create(api, name="labels", source="~/shared-set")["id"])
    cid = cache["id"]
    theirs, dept, outsider = (ServiceClient(hub, u.name) for u in (member, colleague, stranger))
    assert theirs("GET", f"/caches/{cid}").status_code == 404  # private

    r = api("POST", f"/caches/{cid}/members", json={"add": [{"kind": "user", "name": member.name}]})
    assert r.status_code == 400 and "share the cache first" in r.json()["message"]
    assert api("POST", f"/caches/{cid}/share").json()["shared"] is True
    r = api("POST", f"/caches/{cid}/members", json={"add": [{"kind": "user", "name": member.name},
                                                            {"kind": "group", "name": department}]})
    assert r.json()["members"] == [{"kind": "group", "name": department}, {"kind": "user", "name": member.name}]

    assert theirs("GET", f"/caches/{cid}").status_code == 200
    assert [c["id"] for c in theirs("GET", "/caches").json()["shared"]] == [cid]
    assert [c["id"] for c in dept("GET", "/caches").json()["department"]] == [cid]
    assert outsider("GET", f"/caches/{cid}").status_code == 404
    assert theirs("POST", f"/caches/{cid}/members", json={"add": []}).status_code == 404  # members cannot manage

    (root,) = [r for r in theirs("GET", "/jobs/options").json()["roots"] if r["name"] == f"cache:{cid}"]
    mount = [{"host_path": root["path"], "container_path": "/labels", "read_only": True}]
    r = outsider("POST", "/jobs", json={"name": "peek", **JOB, "command": "cat /labels/labels.csv", "mounts": mount})
    assert r.status_code == 400 and "outside the places you may map" in r.json()["message"]
    job = theirs("POST", "/jobs", json={"name": "use it", **JOB, "mounts": mount,
                                        "command": "cat /labels/labels.csv; sleep 20"}).json()
    wait_for(lambda: theirs("GET", f"/jobs/{job['id']}").json()["state"] == "running", 60, "the job to run")

    detail = api("GET", f"/caches/{cid}").json()
    assert [(u["workload"], u["user"], u["kind"], u["running"]) for u in detail["usage"]] == \
        [(job["id"], member.name, "job", True)]
    assert detail["last_used_at"] is not None
    r = api("DELETE", f"/caches/{cid}")
    assert r.status_code == 409 and f"in use by running workloads: {job['id']}" in r.json()["message"]

    theirs("POST", f"/jobs/{job['id']}/terminate")
    api("POST", f"/caches/{cid}/members", json={"remove": [{"kind": "user", "name": member.name}]})
    assert theirs("GET", f"/caches/{cid}").status_code == 404
    assert api("DELETE", f"/caches/{cid}").status_code == 204
    assert api("GET", f"/caches/{cid}").status_code == 404


def test_pages_show_lists_and_settings(hub, make_user):
    gus = make_user()
    storage = Path(hub.platform.paths.user_storage(gus.name))
    (storage / "tiny").mkdir()
    (storage / "tiny" / "a.txt").write_text("a")
    s = login_session(hub, gus.name, gus.password)
    form = page_text(s.get(f"{hub.url}{SERVICE}caches/new", timeout=30))
    assert "~/sub/dir" in form and "URL starting with" in form
    r = xsrf_post(s, hub, f"{SERVICE}caches/new", {"name": "tiny", "region": "default", "source": "~/tiny"})
    assert r.status_code == 302
    api = ServiceClient(hub, gus.name)
    (cache,) = api("GET", "/caches").json()["private"]
    wait_state(api, cache["id"])
    listing = page_text(s.get(f"{hub.url}{SERVICE}caches", timeout=30))
    assert "My private caches" in listing and "tiny" in listing and "100.0%" in listing
    r = xsrf_post(s, hub, f"{SERVICE}caches/new", {"name": "tiny2", "region": "default", "source": "~/tiny"})
    assert r.status_code == 409 and 'id="duplicate-offer"' in page_text(r)
    r = xsrf_post(s, hub, f"{SERVICE}caches/new", {"name": "x", "region": "default", "source": "/etc"})
    assert r.status_code == 400 and "source: /etc is a system directory" in page_text(r)
