"""handlers/openapi.yaml documents exactly the service's API routes, and real answers match it."""

import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from tornado import web

from handlers.app import routes
from tests.hubtools import ServiceClient

SPEC = yaml.safe_load((Path(__file__).resolve().parents[2] / "handlers" / "openapi.yaml").read_text())
PREFIX = "/services/labdeck/"
METHODS = ("get", "post", "put", "patch", "delete")


def api_routes() -> dict[str, set[str]]:
    """{"/api/debug/{session_id}": {"get", "delete"}, ...} from the application's route list."""
    found = {}
    for route in routes(PREFIX):
        pattern, handler = route[0], route[1]
        if not pattern.startswith(PREFIX + "api/"):
            continue
        path = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern[len(PREFIX):])
        found[path] = {m for m in METHODS if getattr(handler, m) is not getattr(web.RequestHandler, m)}
    return found


def test_every_route_is_documented_and_every_documented_route_exists():
    documented = {path: {m for m in item if m in METHODS} for path, item in SPEC["paths"].items()}
    assert api_routes() == documented


def test_the_spec_is_valid_openapi_shaped():
    assert SPEC["openapi"].startswith("3.1")
    for path, item in SPEC["paths"].items():
        for method in (m for m in item if m in METHODS):
            assert item[method].get("summary"), f"{method.upper()} {path} needs a summary"
            assert item[method].get("responses"), f"{method.upper()} {path} needs responses"


def check(instance, schema_name):
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": SPEC["components"]}
    jsonschema.Draft202012Validator(schema).validate(instance)


@pytest.mark.integration
def test_real_answers_match_the_documented_schemas(hub, make_user, debug_image):
    user = make_user()
    api = ServiceClient(hub, user.name)
    error = api("POST", "/debug", json={"name": "x", "password": "short"})
    assert error.status_code == 400
    check(error.json(), "Error")
    created = api("POST", "/debug", json={"name": "spec", "image": "labdeck/debug:latest", "region": "default",
                                          "cpu": 0.5, "memory_gb": 0.5, "password": "spec-pass-123"})
    assert created.status_code == 201, created.text
    check(created.json(), "Session")
    for session in api("GET", "/debug").json()["sessions"]:
        check(session, "Session")
    ended = api("POST", f"/debug/{created.json()['id']}/terminate")
    check(ended.json(), "Session")
    assert api("GET", "/images").json() == {"own": {"debug": [], "job": []}, "shared": [], "images": []}
    groups = api("GET", "/images/choices?kind=debug").json()["groups"]
    assert [g["group"] for g in groups] == ["Platform images"]
    assert all(set(i) == {"name", "title", "description", "kind_label"} for g in groups for i in g["images"])

    job = api("POST", "/jobs", json={"name": "spec", "image": "labdeck/notebook:latest", "region": "default",
                                     "cpu": 0.5, "memory_gb": 0.5, "command": "echo hi > /output/f"})
    assert job.status_code == 201, job.text
    check(job.json(), "Job")
    stopped = api("POST", f"/jobs/{job.json()['id']}/terminate")
    check(stopped.json(), "Job")
    check(api("GET", f"/jobs/{job.json()['id']}/log?offset=0").json(), "LogChunk")
    for listed in api("GET", "/jobs").json()["jobs"]:
        check(listed, "Job")

    import pathlib
    folder = pathlib.Path(hub.platform.paths.user_storage(user.name)) / "spec-data"
    folder.mkdir()
    (folder / "f").write_text("x")
    cache = api("POST", "/caches", json={"name": "spec", "region": "default", "source": "~/spec-data"})
    assert cache.status_code == 201, cache.text
    check(cache.json(), "Cache")
    duplicate = api("POST", "/caches", json={"name": "spec", "region": "default", "source": "~/spec-data"})
    assert duplicate.status_code == 409
    check(duplicate.json()["existing"], "Cache")
    for group in api("GET", "/caches").json().values():
        for listed in group:
            check(listed, "Cache")
