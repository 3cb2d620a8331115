"""Host administration's pure rules, table-driven: the add-host form, GPU inventories, the
maintenance window form, and which hosts a maintenance window closes to which workloads."""

from datetime import datetime, timedelta

import pytest

from services.errors import OptionError
from services.hosts import check_host_form, closed_hosts, probe, ProbeError
from services.maintenance import check_window, parse_time
from services.models import MaintenanceWindow
from services.resources import parse_gpu_inventory
from tests.services.platform_fixtures import make_platform

GOOD = {"name": "gpu-03", "region": "east", "docker_url": "tcp://10.0.0.13:2376"}


@pytest.mark.parametrize("change, field, message", [
    ({"name": ""}, "name", "use 1-63 lowercase"),
    ({"name": "GPU 3"}, "name", "use 1-63 lowercase"),
    ({"name": "-gpu"}, "name", "use 1-63 lowercase"),
    ({"name": "local"}, "name", "a host named 'local' exists already"),
    ({"name": "refresh"}, "name", "'refresh' is reserved"),
    ({"region": "East Campus"}, "region", "use 1-63 lowercase"),
    ({"docker_url": ""}, "docker_url", "use unix:///path/to/docker.sock or tcp://HOST:PORT"),
    ({"docker_url": "http://10.0.0.13:2376"}, "docker_url", "use unix:///path"),
    ({"docker_url": "unix://relative.sock"}, "docker_url", "unix:///absolute/path"),
    ({"docker_url": "tcp://10.0.0.13"}, "docker_url", "tcp://HOST:PORT"),
    ({"tls_ca": "/etc/hostname"}, "tls_cert", "give all three TLS files"),
    ({"tls_ca": "/nope/ca", "tls_cert": "/nope/cert", "tls_key": "/nope/key"}, "tls_ca", "is not a readable file"),
    ({"address": "10.0.0.13; rm"}, "address", "an IP address or host name"),
    ({"gpus": "A100"}, "gpus", "is not MODEL: COUNT"),
    ({"gpus": "A100: 0"}, "gpus", "is not MODEL: COUNT"),
    ({"gpus": "A100: 2, A100: 1"}, "gpus", "A100 is listed twice"),
])
def test_add_host_form_refusals_name_the_field(change, field, message):
    with pytest.raises(OptionError) as e:
        check_host_form({**GOOD, **change}, existing={"local"})
    assert e.value.field == field and message in str(e.value)


def test_add_host_form_accepts_and_normalises():
    spec = check_host_form({**GOOD, "name": " gpu-03 ", "gpus": "A100: 4, T4 x 2", "address": "10.0.0.13"}, set())
    assert (spec.name, spec.region, spec.gpus, spec.address, spec.tls) == ("gpu-03", "east", {"A100": 4, "T4": 2},
                                                                           "10.0.0.13", None)
    assert check_host_form({**GOOD, "docker_url": "unix:///run/docker.sock"}, set()).docker_url == "unix:///run/docker.sock"


@pytest.mark.parametrize("text, inventory", [
    ("", {}), ("A100: 4", {"A100": 4}), ("A100:4, T4:2", {"A100": 4, "T4": 2}),
    ("RTX 4090 = 8", {"RTX 4090": 8}), ("H100×2", {"H100": 2}),
])
def test_gpu_inventory_text(text, inventory):
    assert parse_gpu_inventory(text) == inventory


def test_probe_says_why_an_endpoint_does_not_answer(tmp_path):
    with pytest.raises(ProbeError, match="no such file or directory"):
        probe(f"unix://{tmp_path}/none.sock", timeout=2)
    with pytest.raises(ProbeError, match="connection refused"):
        probe("tcp://127.0.0.1:1", timeout=2)


NOW = datetime(2026, 12, 1, 12, 0)


@pytest.mark.parametrize("raw, field, message", [
    ({"starts_at": "", "ends_at": "2026-12-01T14:00"}, "starts_at", "give a date and time"),
    ({"starts_at": "tomorrow", "ends_at": "2026-12-01T14:00"}, "starts_at", "is not a date and time"),
    ({"starts_at": "2026-12-01T14:00", "ends_at": "2026-12-01T13:00"}, "ends_at", "must be after the start"),
    ({"starts_at": "2026-11-30T10:00", "ends_at": "2026-11-30T11:00"}, "ends_at", "is in the past"),
    ({"starts_at": "2026-12-01T13:00", "ends_at": "2027-02-01T13:00"}, "ends_at", "at most 30 days"),
    ({"starts_at": "2026-12-01T13:00", "ends_at": "2026-12-01T14:00", "message": " "}, "message", "tell users"),
    ({"starts_at": "2026-12-01T13:00", "ends_at": "2026-12-01T14:00", "message": "x" * 2001}, "message", "at most 2000"),
])
def test_window_refusals_name_the_field(raw, field, message):
    with pytest.raises(OptionError) as e:
        check_window({"message": "driver update", **raw}, NOW)
    assert e.value.field == field and message in str(e.value)


def test_times_are_read_as_utc():
    assert parse_time("2026-12-01T14:00", "x") == datetime(2026, 12, 1, 14, 0)
    assert parse_time("2026-12-01T14:00Z", "x") == datetime(2026, 12, 1, 14, 0)
    assert parse_time("2026-12-01T22:00+08:00", "x") == datetime(2026, 12, 1, 14, 0)


H = timedelta(hours=1)


@pytest.mark.parametrize("window, limit_s, closed", [
    ((NOW + 2 * H, NOW + 3 * H), None, "has maintenance from 2026-12-01 14:00 UTC, and this workload has no time limit then"),
    ((NOW + 2 * H, NOW + 3 * H), 3600, None),  # ends an hour before the window
    ((NOW + 2 * H, NOW + 3 * H), 3 * 3600, "would still run then"),
    ((NOW - H, NOW + H), 60, "is in maintenance until 2026-12-01 13:00 UTC"),
    ((NOW - 2 * H, NOW - H), None, None),  # over
])
def test_maintenance_windows_close_hosts_to_work_that_would_overlap(tmp_path, window, limit_s, closed):
    platform = make_platform(tmp_path)
    with platform.db.session() as s:
        s.add(MaintenanceWindow(host="local", starts_at=window[0], ends_at=window[1], message="m", created_by="a"))
        s.add(MaintenanceWindow(host="other", starts_at=NOW - H, ends_at=NOW + H, message="m", created_by="a"))
    with platform.db.session() as s:
        found = closed_hosts(s, ["local"], NOW, limit_s)
    if closed is None:
        assert found == {}
    else:
        assert closed in found["local"] and list(found) == ["local"]
