"""The one option validator: every refusal names the field and the limit."""

import pytest

from services.errors import OptionError
from services.identity import Requester
from services.options import validate_request
from tests.services.platform_fixtures import make_platform

ALICE = Requester("alice")
VISION = Requester("vic", groups=frozenset({"vision"}))
BASE = {"image": "labdeck/notebook:latest", "region": "default", "cpu": 1, "memory_gb": 2, "gpus": 0}


@pytest.fixture
def platform(tmp_path):
    return make_platform(tmp_path)


REFUSED = [
    ({"cpu": "many"}, "cpu", "must be a number"),
    ({"cpu": True}, "cpu", "must be a number"),
    ({"cpu": "nan"}, "cpu", "must be a finite number"),
    ({"cpu": ""}, "cpu", "is required"),
    ({"cpu": 0.05}, "cpu", "must be at least 0.1 cores"),
    ({"cpu": 9}, "cpu", "9 cores is more than any host in region 'default' has (8 cores)"),
    ({"cpu": 8, "region": "east"}, "cpu", "more than any host in region 'east' has (2 cores)"),
    ({"memory_gb": 0.1}, "memory_gb", "must be at least 0.25 GB"),
    ({"memory_gb": 17}, "memory_gb", "17 GB is more than any host in region 'default' has (16 GB)"),
    ({"gpus": -1}, "gpus", "must be 0 or more"),
    ({"gpus": "1.5"}, "gpus", "must be a whole number"),
    ({"gpus": 3, "gpu_model": "A100"}, "gpus", "3 GPUs is more than your quota of 2 GPUs"),
    ({"gpus": 1}, "gpu_model", "choose one of: A100, T4"),
    ({"gpus": 1, "gpu_model": "V100"}, "gpu_model", "'V100' is not offered in region 'default'; choose one of: A100, T4"),
    ({"gpus": 1, "region": "east"}, "gpus", "region 'east' offers no GPUs; choose 0"),
    ({"gpus": 2, "gpu_model": "T4"}, "gpus", "2 × T4 do not fit on one host in region 'default' (at most 1 per host)"),
    ({"region": "mars"}, "region", "'mars' is not a region; choose one of: default, east"),
    ({"region": ""}, "region", "choose one of: default, east"),
    ({"image": "lab/vision:1"}, "image", "'lab/vision:1' is not available to you"),
    ({"image": "lab/batch:1"}, "image", "'lab/batch:1' is not available to you"),
    ({"image": 42}, "image", "choose an image"),
    ({"command": "rm -rf /"}, "command", "unknown option; allowed:"),
    ({"mounts": [{"host_path": "/etc", "container_path": "/x"}]}, "mounts[0].host_path", "system directory"),
]


@pytest.mark.parametrize("change, field, words", REFUSED)
def test_refusals_name_field_and_limit(platform, change, field, words):
    with pytest.raises(OptionError) as info:
        validate_request(platform, ALICE, "notebook", {**BASE, **change})
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_quota_limits_come_from_config_and_groups(tmp_path):
    platform = make_platform(tmp_path, quota={"cpu": 2, "memory_gb": 4, "gpus": 0},
                             Quotas__groups={"vision": {"cpu": 4, "gpus": 1}})
    with pytest.raises(OptionError, match=r"cpu: 3 cores is more than your quota of 2 cores"):
        validate_request(platform, ALICE, "notebook", {**BASE, "cpu": 3})
    with pytest.raises(OptionError, match=r"gpus: 1 GPU is more than your quota of 0 GPUs"):
        validate_request(platform, ALICE, "notebook", {**BASE, "gpus": 1, "gpu_model": "A100"})
    ok = validate_request(platform, VISION, "notebook", {**BASE, "cpu": 3, "gpus": 1, "gpu_model": "A100"})
    assert ok.resources.cpu_milli == 3000 and ok.resources.gpu_count == 1


ACCEPTED = [
    ({}, (1000, 2048, 0, None)),
    ({"cpu": "1.5", "memory_gb": "0.5"}, (1500, 512, 0, None)),
    ({"gpus": "2", "gpu_model": "A100"}, (1000, 2048, 2, "A100")),
    ({"gpus": 1, "gpu_model": "T4"}, (1000, 2048, 1, "T4")),
    ({"gpus": 0, "gpu_model": "V100"}, (1000, 2048, 0, None)),  # no GPUs: the model is irrelevant
]


@pytest.mark.parametrize("change, expected", ACCEPTED)
def test_accepted_requests_are_typed(platform, change, expected):
    req = validate_request(platform, ALICE, "notebook", {**BASE, **change})
    r = req.resources
    assert (r.cpu_milli, r.memory_mb, r.gpu_count, r.gpu_model) == expected
    assert req.image.name == "labdeck/notebook:latest" and req.kind == "notebook"


def test_defaults_when_the_api_leaves_fields_out(tmp_path):
    platform = make_platform(tmp_path, hosts=[{"name": "h", "region": "only", "cpus": 4, "memory_gb": 8,
                                               "gpus": {"A10": 1}}])
    req = validate_request(platform, ALICE, "notebook", {"gpus": 1})
    assert req.resources.region == "only" and req.resources.gpu_model == "A10"
    assert req.image.name == "labdeck/notebook:latest"
    assert (req.resources.cpu_milli, req.resources.memory_mb) == (1000, 2048)


def test_group_image_offered_to_members_only(platform):
    assert validate_request(platform, VISION, "notebook", {**BASE, "image": "lab/vision:1"}).image.title == "Vision"
    names = [c.name for c in platform.catalog.images_for(ALICE, "notebook")]
    assert names == ["labdeck/notebook:latest"]


def test_options_round_trip_for_prefill(platform):
    req = validate_request(platform, ALICE, "notebook", {
        **BASE, "gpus": 1, "gpu_model": "A100",
        "mounts": [{"host_path": "~", "container_path": "/home/jovyan/work", "read_only": "rw"}]})
    options = req.as_options()
    assert options["mounts"][0]["host_path"] == platform.paths.user_storage("alice")
    again = validate_request(platform, ALICE, "notebook", options)
    assert again == req


@pytest.mark.parametrize("raw", [None, {}])
def test_empty_options_use_defaults(tmp_path, raw):
    platform = make_platform(tmp_path, hosts=[{"name": "h", "region": "r", "cpus": 2, "memory_gb": 4, "gpus": {}}])
    assert validate_request(platform, ALICE, "notebook", raw).resources.region == "r"


def test_not_an_object_is_refused(platform):
    with pytest.raises(OptionError, match="options: must be an object"):
        validate_request(platform, ALICE, "notebook", ["cpu", 1])
