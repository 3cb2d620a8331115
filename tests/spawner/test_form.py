"""The form's fields become exactly the options the REST API takes."""

import pytest

from spawner.form import options_from_form

BASE = {"image": ["labdeck/notebook:latest"], "region": ["default"], "cpu": ["2"], "memory_gb": ["4"],
        "gpus": ["1"], "gpu_model": ["A100"]}

CASES = [
    ({}, []),
    ({"mount_host": ["~"], "mount_container": ["/home/jovyan/work"], "mount_mode": ["rw"]},
     [{"host_path": "~", "container_path": "/home/jovyan/work", "read_only": False}]),
    ({"mount_host": ["~", " ", "/srv/d"], "mount_container": ["/w", "", "/d"], "mount_mode": ["rw", "rw", "ro"]},
     [{"host_path": "~", "container_path": "/w", "read_only": False},
      {"host_path": "/srv/d", "container_path": "/d", "read_only": True}]),  # blank rows are dropped
    ({"mount_host": ["~"], "mount_container": [], "mount_mode": []},
     [{"host_path": "~", "container_path": "", "read_only": False}]),  # half rows reach the validator
]


@pytest.mark.parametrize("mounts, expected", CASES)
def test_form_fields_to_options(mounts, expected):
    options = options_from_form({**BASE, **mounts})
    assert options == {"image": "labdeck/notebook:latest", "region": "default", "cpu": "2", "memory_gb": "4",
                       "gpus": "1", "gpu_model": "A100", "mounts": expected}


def test_missing_fields_are_empty_strings_for_the_validator_to_name():
    assert options_from_form({})["cpu"] == ""
