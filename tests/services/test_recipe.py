"""The one container recipe: limits, hardening, labels and GPUs."""

import pytest

from services.cpu_groups import CpuGroups
from services.ledger import Placement
from services.paths import Mount
from services.recipe import RecipeError, workload_labels
from services.resources import GPU_SOURCE_DECLARED, GPU_SOURCE_DETECTED, Gpu, Host, declared_gpus, parse_nvidia_smi
from tests.services.platform_fixtures import make_platform

DETECTED = (Gpu(0, "H200", "GPU-aaa"), Gpu(1, "H200", "GPU-bbb"), Gpu(2, "H200", "GPU-ccc"))


def host(source, gpus=DETECTED):
    return Host(name="h", region="r", docker_url="unix:///var/run/docker.sock", tls=None, address="127.0.0.1",
                cpus=16, memory_mb=65536, gpus=gpus, gpu_source=source)


def placement(gpus=()):
    return Placement("nb-1", "h", "r", 2500, 4096, "H200" if gpus else None, tuple(gpus))


@pytest.fixture
def recipe(tmp_path):
    return make_platform(tmp_path).recipe


def build(recipe, h, p, **kw):
    return recipe.build(name="labdeck-nb-x", image="img", image_labels=kw.pop("image_labels", {}), host=h,
                        placement=p, labels={"a": "b"}, **kw)


GPU_CASES = [
    # source, held GPUs, NVIDIA_VISIBLE_DEVICES, device ids requested
    (GPU_SOURCE_DETECTED, (DETECTED[0], DETECTED[2]), "GPU-aaa,GPU-ccc", ["GPU-aaa", "GPU-ccc"]),
    (GPU_SOURCE_DECLARED, (Gpu(1, "H200", "1"),), "1", None),
    (GPU_SOURCE_DETECTED, (), "void", None),
    (GPU_SOURCE_DECLARED, (), "void", None),
]


@pytest.mark.parametrize("source, held, visible, requested", GPU_CASES)
def test_gpu_exposure(recipe, source, held, visible, requested):
    spec = build(recipe, host(source), placement(held))
    assert spec.create_kwargs["environment"]["NVIDIA_VISIBLE_DEVICES"] == visible
    devices = spec.host_config["device_requests"]
    if requested is None:
        assert devices is None
    else:
        assert len(devices) == 1 and devices[0]["DeviceIDs"] == requested
        assert devices[0]["Driver"] == "nvidia" and devices[0]["Capabilities"] == [["gpu"]]


def test_limits_and_hardening(recipe):
    spec = build(recipe, host(GPU_SOURCE_DECLARED), placement(),
                 mounts=[Mount("/srv/u", "/home/jovyan/work", False, "storage"), Mount("/srv/d", "/data", True, "d")],
                 ports={8888: None})
    hc = spec.host_config
    assert hc["cpu_quota"] == 250_000 and hc["cpu_period"] == 100_000
    assert hc["mem_limit"] == hc["memswap_limit"] == "4096m"
    assert hc["pids_limit"] == 4096 and hc["shm_size"] == "2048m"
    assert hc["cap_drop"] == ["ALL"] and hc["cap_add"] is None
    assert hc["security_opt"] == ["no-new-privileges:true"] and hc["privileged"] is False
    assert hc["init"] is True and hc["auto_remove"] is False
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in hc["mounts"]] == [
        ("/srv/u", "/home/jovyan/work", False), ("/srv/d", "/data", True)]
    assert hc["port_bindings"] == {8888: ("127.0.0.1",)}
    env = spec.create_kwargs["environment"]
    assert env["LABDECK_CPU"] == "2.5" and env["OMP_NUM_THREADS"] == "2" and env["LABDECK_MEMORY_GB"] == "4"


@pytest.mark.parametrize("label, granted", [("", None), ("SETUID, setgid", ["SETUID", "SETGID"]), ("CHOWN", ["CHOWN"])])
def test_capabilities_only_what_the_image_declares(recipe, label, granted):
    spec = build(recipe, host(GPU_SOURCE_DECLARED), placement(), image_labels={"labdeck.capabilities": label})
    assert spec.host_config["cap_add"] == granted


def test_capabilities_outside_the_allow_list_are_refused(recipe):
    with pytest.raises(RecipeError, match="SYS_ADMIN"):
        build(recipe, host(GPU_SOURCE_DECLARED), placement(), image_labels={"labdeck.capabilities": "SYS_ADMIN"})


def test_labels_carry_what_the_ledger_needs():
    labels = workload_labels("inst", workload_id="nb-1", kind="notebook", user="al",
                             placement=placement((DETECTED[0], DETECTED[2])))
    assert labels == {"labdeck.instance": "inst", "labdeck.id": "nb-1", "labdeck.kind": "notebook",
                      "labdeck.user": "al", "labdeck.region": "r", "labdeck.host": "h", "labdeck.gpus": "0,2",
                      "labdeck.gpu_model": "H200", "labdeck.cpu_milli": "2500", "labdeck.memory_mb": "4096",
                      "labdeck.ports": "", "labdeck.server_name": ""}


def test_nvidia_smi_output_is_parsed():
    out = "0, NVIDIA H200, GPU-1a\n1, NVIDIA A100-SXM4-80GB, GPU-2b\n\nNo devices were found\n"
    assert parse_nvidia_smi(out) == [Gpu(0, "H200", "GPU-1a"), Gpu(1, "A100-SXM4-80GB", "GPU-2b")]


@pytest.mark.parametrize("spec, expected", [
    ({"A100": 2, "T4": 1}, [(0, "A100"), (1, "A100"), (2, "T4")]),
    ([{"index": 3, "model": "V100"}], [(3, "V100")]),
    ({}, []),
])
def test_declared_inventory(spec, expected):
    assert [(g.index, g.model) for g in declared_gpus(spec)] == expected


@pytest.mark.parametrize("kind, shares", [("notebook", 8192), ("debug", 8192), ("job", 1024), ("cache", 1024), ("", 1024)])
def test_people_waiting_get_the_cpu_before_batch_work(recipe, kind, shares):
    spec = recipe.build(name="labdeck-x", image="img", image_labels={}, host=host(GPU_SOURCE_DECLARED),
                        placement=placement(), labels={"labdeck.kind": kind})
    assert spec.host_config["cpu_shares"] == shares


@pytest.mark.parametrize("kind, docker_url, prepared, parent", [
    ("notebook", "unix:///var/run/docker.sock", True, "/labdeck-interactive"),
    ("debug", "unix:///var/run/docker.sock", True, "/labdeck-interactive"),
    ("job", "unix:///var/run/docker.sock", True, None),  # batch work stays in Docker's group
    ("cache", "unix:///var/run/docker.sock", True, None),
    ("notebook", "tcp://10.0.0.5:2376", True, None),  # the hub cannot weigh a remote host's groups
    ("notebook", "unix:///var/run/docker.sock", False, None),  # not prepared: no root, systemd's driver
])
def test_servers_people_wait_for_run_in_the_interactive_group(tmp_path, kind, docker_url, prepared, parent):
    root = tmp_path / "cgroup"
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.shares").write_text("1024\n")
    recipe = make_platform(tmp_path, CpuGroups__cgroup_root=str(root)).recipe
    if prepared:  # as the hub does when it starts
        CpuGroups(cgroup_root=str(root)).prepare_interactive("cgroupfs")
    h = Host(name="h", region="r", docker_url=docker_url, tls=None, address="127.0.0.1", cpus=16,
             memory_mb=65536, gpus=(), gpu_source=GPU_SOURCE_DECLARED)
    spec = recipe.build(name="labdeck-x", image="img", image_labels={}, host=h, placement=placement(),
                        labels={"labdeck.kind": kind})
    assert spec.host_config.get("cgroup_parent") == parent
