"""Private repository against the real hub, service and Docker engine: a snapshot shared with a
user and a department shows in every picker of theirs and starts there, strangers are refused,
in-use images are neither renamed nor deleted, and deleting removes the image from the engine."""

import html
import re
import secrets

import docker
import pytest

from tests.handlers.test_debug import create, ssh, terminate, wait_running, wait_snapshot
from tests.hubtools import SERVICE, ServiceClient, login_session, page_text, wait_for, xsrf_post

pytestmark = pytest.mark.integration


def picker_images(session, hub, path) -> set[str]:
    """The image references a form's picker offers, read from the page a user gets."""
    r = session.get(f"{hub.url}{path}", timeout=30)
    assert r.status_code == 200, r.status_code
    picker = re.search(r'<select[^>]*id="image".*?</select>', page_text(r), re.S)
    assert picker, f"no image picker on {path}"
    return {html.unescape(v) for v in re.findall(r'<option value="([^"]+)"', picker.group(0))}


def every_picker(hub, user) -> list[set[str]]:
    """Start my Server, remote debug and training: what each offers this user."""
    s = login_session(hub, user.email, user.password)
    return [picker_images(s, hub, path) for path in ("/hub/spawn", f"{SERVICE}debug/new", f"{SERVICE}jobs/new")]


def save_snapshot(api, session_id, name, kind="debug"):
    r = api("POST", f"/debug/{session_id}/snapshot", json={"name": name, "tag": "v1", "kind": kind})
    assert r.status_code == 202, r.text
    image = wait_snapshot(api, r.json()["id"])
    assert image["state"] == "saved", image
    return image


@pytest.fixture(scope="module")
def snapshot(hub, make_module_user, debug_image):
    """Alice's saved snapshot of a debug session (with a file made in it), shared by the tests here."""
    alice = make_module_user()
    api = ServiceClient(hub, alice.name)
    session = wait_running(api, create(api, name="tuned env")["id"])
    assert ssh(session["ssh_port"], "echo tuned > /home/jovyan/tuned.txt")[0] == 0
    image = save_snapshot(api, session["id"], f"tuned-{secrets.token_hex(2)}")
    terminate(api, session["id"])
    return alice, api, image


def test_sharing_reaches_every_picker_and_only_the_members(hub, make_user, snapshot):
    alice, api, image = snapshot
    ref = image["reference"]
    assert image["source_name"] == "tuned env" and image["kind_title"] == "remote debug"
    assert all(ref in offered for offered in every_picker(hub, alice))  # her own, in all three

    bob, carol = make_user(), make_user()
    department = f"robotics-{secrets.token_hex(2)}"
    dave = make_user(groups=[department])
    bob_api, carol_api, dave_api = (ServiceClient(hub, u.name) for u in (bob, carol, dave))
    assert bob_api("GET", f"/images/{image['id']}").status_code == 404  # not shared yet

    r = api("POST", f"/images/{image['id']}/members", json={"add": [{"kind": "user", "name": bob.name}]})
    assert r.status_code == 200 and r.json()["members"] == [{"kind": "user", "name": bob.name}]
    assert all(ref in offered for offered in every_picker(hub, bob))
    choices = bob_api("GET", "/images/choices?kind=job").json()["groups"]
    shared = next(g for g in choices if g["group"] == "Shared with me")
    assert [i["name"] for i in shared["images"]] == [ref] and alice.name in shared["images"][0]["title"]
    assert [i["reference"] for i in bob_api("GET", "/images").json()["shared"]] == [ref]

    # Bob starts a debug session from Alice's image: her file is in it
    session = wait_running(bob_api, create(bob_api, image=ref)["id"])
    assert ssh(session["ssh_port"], "cat /home/jovyan/tuned.txt")[1].strip() == "tuned"

    # Carol is not a member: no picker offers it and naming it is refused, in the service and the hub
    assert not any(ref in offered for offered in every_picker(hub, carol))
    r = carol_api("POST", "/debug", json={"name": "x", "image": ref, "region": "default", "cpu": 0.5,
                                          "memory_gb": 0.5, "ports": 1, "password": "debug-pass-42"})
    assert r.status_code == 400 and r.json()["message"].startswith(f"image: '{ref}' is not available to you")
    r = carol_api("POST", "/jobs", json={"name": "x", "image": ref, "region": "default", "cpu": 0.5,
                                         "memory_gb": 0.5, "command": "true"})
    assert r.status_code == 400 and f"'{ref}' is not available to you" in r.json()["message"]
    r = hub.api("POST", f"/users/{carol.name}/server", json={"image": ref, "region": "default", "cpu": 0.5,
                                                            "memory_gb": 0.5})
    assert r.status_code == 400 and f"'{ref}' is not available to you" in r.json()["message"]
    assert carol_api("GET", f"/images/{image['id']}").status_code == 404

    # departments: through group membership
    assert not any(ref in offered for offered in every_picker(hub, dave))
    api("POST", f"/images/{image['id']}/members", json={"add": [{"kind": "group", "name": department}]})
    assert all(ref in offered for offered in every_picker(hub, dave))
    api("POST", f"/images/{image['id']}/members", json={"remove": [{"kind": "group", "name": department}]})
    assert not any(ref in offered for offered in every_picker(hub, dave))

    # a member may use it, not manage it
    assert bob_api("PATCH", f"/images/{image['id']}", json={"tag": "mine"}).status_code == 404
    assert bob_api("DELETE", f"/images/{image['id']}").status_code == 404
    assert bob_api("POST", f"/images/{image['id']}/members", json={"add": []}).status_code == 404

    # in use by Bob's session: Alice can neither rename nor delete it, and is told by what
    r = api("DELETE", f"/images/{image['id']}")
    assert r.status_code == 409 and session["id"] in r.json()["message"], r.text
    r = api("PATCH", f"/images/{image['id']}", json={"tag": "v2"})
    assert r.status_code == 409 and session["id"] in r.json()["message"], r.text
    assert api("GET", f"/images/{image['id']}").json()["in_use_by"] == [session["id"]]
    terminate(bob_api, session["id"])

    # unsharing takes it out of Bob's pickers again
    api("POST", f"/images/{image['id']}/members", json={"remove": [{"kind": "user", "name": bob.name}]})
    assert not any(ref in offered for offered in every_picker(hub, bob))
    r = bob_api("POST", "/debug", json={"name": "again", "image": ref, "region": "default", "cpu": 0.5,
                                        "memory_gb": 0.5, "ports": 1, "password": "debug-pass-42"})
    assert r.status_code == 400


def test_bad_changes_are_refused_with_the_field(hub, make_user, snapshot):
    alice, api, image = snapshot
    url = f"/images/{image['id']}"
    cases = [
        ("POST", f"{url}/members", {"add": [{"kind": "user", "name": "nobody-" + secrets.token_hex(3)}]},
         "add[0]: no user is named"),
        ("POST", f"{url}/members", {"add": [{"kind": "team", "name": "x"}]}, "add[0]: must be"),
        ("POST", f"{url}/members", {"add": "bob"}, "add: must be a list"),
        ("PATCH", url, {"name": "Not Valid"}, "name: use 1-64 lowercase"),
        ("PATCH", url, {"tag": "-bad"}, "tag: use 1-128"),
        ("PATCH", url, {"kind": "notebook"}, "kind: choose one of: debug, job"),
    ]
    for method, path, body, message in cases:
        r = api(method, path, json=body)
        assert r.status_code == 400 and r.json()["message"].startswith(message), (body, r.text)
    assert api("GET", url).json()["members"] == []  # nothing was added
    assert api("GET", "/images/choices?kind=desktop").status_code == 400
    stranger = ServiceClient(hub, make_user().name)
    for method in ("GET", "PATCH", "DELETE"):
        assert stranger(method, url, json={} if method == "PATCH" else None).status_code == 404


def test_rename_kind_and_delete_through_the_page(hub, make_user, snapshot, docker_client):
    alice, api, image = snapshot
    s = login_session(hub, alice.email, alice.password)
    page = page_text(s.get(f"{hub.url}{SERVICE}images", timeout=30))
    assert image["reference"] in page and 'id="debug-images"' in page

    new_name = f"renamed-{secrets.token_hex(2)}"
    r = xsrf_post(s, hub, f"{SERVICE}images/{image['id']}/update", {"name": new_name, "tag": "v3", "kind": "job"},
                  allow_redirects=True)
    assert r.status_code == 200
    page = page_text(r)
    assert f"Image is now {new_name}:v3 (training / evaluation)" in page
    jobs_table = re.search(r'id="job-images".*?</table>', page, re.S).group(0)
    assert f"{new_name}:v3" in jobs_table
    renamed = api("GET", f"/images/{image['id']}").json()
    assert renamed["kind"] == "job" and renamed["reference"].endswith(f"/{new_name}:v3")
    docker_client.images.get(renamed["reference"])  # the engine has the new name...
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(image["reference"])  # ...and not the old one
    assert renamed["reference"] in every_picker(hub, alice)[2]

    # a job queued or running on it keeps it; once it ended, it can go
    job = api("POST", "/jobs", json={"name": "uses it", "image": renamed["reference"], "region": "default",
                                     "cpu": 0.5, "memory_gb": 0.5, "command": "sleep 60"}).json()
    r = xsrf_post(s, hub, f"{SERVICE}images/{image['id']}/delete", allow_redirects=True)
    assert f"is in use by {job['id']}" in page_text(r)
    api("POST", f"/jobs/{job['id']}/terminate")
    wait_for(lambda: api("GET", f"/jobs/{job['id']}").json()["state"] == "ended", 30, "the job to end")
    r = xsrf_post(s, hub, f"{SERVICE}images/{image['id']}/delete", allow_redirects=True)
    assert f"Deleted image {new_name}:v3" in page_text(r)
    assert api("GET", f"/images/{image['id']}").status_code == 404
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(renamed["reference"])
    assert renamed["reference"] not in every_picker(hub, alice)[1]
