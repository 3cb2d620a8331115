"""Path policy: what a user may map, and the message they get when they may not."""

import os
import socket
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from traitlets import TraitError

from services.errors import OptionError
from services.identity import Requester
from services.naming import escape_name
from services.paths import Mount, PathPolicy, Root
from services.platform import Platform

ALICE = Requester("alice")
UID, GID = 4321, 4322


@pytest.fixture
def env(tmp_path):
    """Storage for alice with symlinks, two shared roots, and a directory outside them all."""
    shared = tmp_path / "shared"
    (shared / "imagenet" / "train").mkdir(parents=True)
    (shared / "imagenet" / "labels.txt").write_text("cat\n")
    (shared / "data").mkdir()
    (shared / "data2").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    policy = PathPolicy(
        user_storage_root=str(tmp_path / "storage"),
        shared_roots=[
            {"name": "imagenet", "path": str(shared / "imagenet"), "description": "ImageNet 2012"},
            {"name": "data", "path": str(shared / "data")},
        ],
        storage_uid=UID,
        storage_gid=GID,
    )
    home = Path(policy.user_storage("alice"))
    (home / "real").mkdir()
    (home / "file.txt").write_text("x")
    (home / "inlink").symlink_to(home / "real")
    (home / "outlink").symlink_to(outside)
    (home / "etclink").symlink_to("/etc")
    (home / "bobs").symlink_to(tmp_path / "storage" / "bob")
    (home / "dataset").symlink_to(shared / "imagenet")
    os.mkfifo(home / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(home / "sock"))
    (shared / "imagenet" / "latest").symlink_to(shared / "imagenet" / "train")
    (shared / "imagenet" / "escape").symlink_to(outside)
    yield SimpleNamespace(policy=policy, tmp=str(tmp_path), home=str(home), shared=str(shared), outside=str(outside))
    listener.close()


def fill(env, text):
    return text.format(tmp=env.tmp, home=env.home, shared=env.shared, outside=env.outside)


def row(host, target="/data", read_only=None):
    result = {"host_path": host, "container_path": target}
    if read_only is not None:
        result["read_only"] = read_only
    return result


def refused(env, rows, field=None) -> str:
    """The message check_mappings refuses rows with; without ``field: `` when field is given."""
    with pytest.raises(OptionError) as info:
        env.policy.check_mappings(ALICE, rows)
    message = str(info.value)
    assert "Traceback" not in message
    if field is None:
        return message
    assert message.startswith(f"{field}: ")
    return message[len(field) + 2 :]


# ---- malformed input ----

MALFORMED = [
    ("not a list", "mounts: must be a list"),
    ([["~", "/data"]], "mounts[0]: must be an object"),
    ([{"host_path": "~", "container_path": "/d", "mode": "ro"}], "mounts[0]: unknown key 'mode'; allowed: host_path"),
    ([{"host_path": 5, "container_path": "/d"}], "mounts[0].host_path: must be a path"),
    ([{"host_path": "~", "container_path": ["/d"]}], "mounts[0].container_path: must be a path"),
    ([{"host_path": "~"}], "mounts[0].container_path: is required when host_path is given"),
    ([{"host_path": " ", "container_path": "/d"}], "mounts[0].host_path: is required when container_path"),
    ([row("~", read_only="maybe")], "mounts[0].read_only: must be true or false (also on/off, ro/rw, 1/0)"),
    ([row("~", read_only=2)], "mounts[0].read_only: must be true or false"),
    ([row("", " "), row("relative/dir")], "mounts[1].host_path: must be an absolute path, or ~/sub/dir"),
    ([row(f"~/{n}", f"/d{n}") for n in range(17)], "mounts: at most 16 path mappings are allowed, got 17"),
]


@pytest.mark.parametrize("rows, expected", MALFORMED)
def test_malformed_rows_are_refused_naming_the_field(env, rows, expected):
    assert refused(env, rows).startswith(expected)


# ---- host paths ----

HOST_REFUSALS = [
    ("~bob", "~ means your own storage: write ~ or ~/sub/dir"),
    ("~/../bob", "must not contain '..'"),
    ("{home}/real/../../bob", "must not contain '..'"),
    ("~/a\x00b", "must not contain NUL bytes"),
    ("~/a\nb", "control characters"),
    ("~/a:/etc", "must not contain ':'"),
    ("~/" + "a" * 1100, "is longer than 1024 characters"),
    ("/", "/ is a system directory and cannot be mapped"),
    ("/etc", "/etc is a system directory and cannot be mapped"),
    ("/etc/passwd", "/etc/passwd lies in the system directory /etc and cannot be mapped"),
    ("/proc/1/root", "lies in the system directory /proc"),
    ("/usr/lib/", "lies in the system directory /usr"),
    ("/var/lib/docker/volumes", "lies in the system directory /var/lib/docker"),
    ("/root/.ssh", "lies in the system directory /root"),
    ("/var/run/docker.sock", "/var/run/docker.sock is the Docker socket and cannot be mapped"),
    ("/run/docker.sock", "is the Docker socket and cannot be mapped"),
    ("~/sock", "~/sock is a socket and cannot be mapped"),
    ("~/fifo", "~/fifo is neither a directory nor a regular file"),
    ("~/file.txt/sub", "~/file.txt/sub cannot be created: file.txt is a file"),
    (
        "{outside}",
        "{outside} is outside the places you may map: ~ (your storage), "
        "{shared}/imagenet (read-only), {shared}/data (read-only)",
    ),
    ("{shared}/data2", "{shared}/data2 is outside the places you may map"),  # not inside {shared}/data
    ("{shared}", "is outside the places you may map"),
    ("{tmp}/storage/bob", "is outside the places you may map"),  # someone else's storage
    ("~/outlink", "~/outlink is a symbolic link that leads outside the allowed roots"),
    ("~/outlink/sub", "is a symbolic link that leads outside the allowed roots"),
    ("~/etclink", "is a symbolic link that leads outside the allowed roots"),
    ("~/bobs", "is a symbolic link that leads outside the allowed roots"),
    ("{home}/outlink", "is a symbolic link that leads outside the allowed roots"),
    ("{shared}/imagenet/escape", "is a symbolic link that leads outside the allowed roots"),
    ("{shared}/imagenet/missing", "does not exist in the shared root 'imagenet'"),
]


@pytest.mark.parametrize("host, expected", HOST_REFUSALS)
def test_host_path_refusal_messages(env, host, expected):
    assert fill(env, expected) in refused(env, [row(fill(env, host), read_only=True)], "mounts[0].host_path")


@pytest.mark.parametrize("flag", [False, "false", "rw", "off", "0", 0])
@pytest.mark.parametrize("host", ["{shared}/imagenet", "{shared}/imagenet/train", "~/dataset"])
def test_read_write_on_a_shared_root_is_refused(env, host, flag):
    message = refused(env, [row(fill(env, host), read_only=flag)], "mounts[0].host_path")
    assert "read-only root 'imagenet'; mark it read-only" in message


def test_nothing_is_created_when_any_row_is_refused(env):
    rows = [row("~/fresh/dir", "/a"), row("/etc", "/b")]
    assert refused(env, rows).startswith("mounts[1].host_path: /etc is a system directory")
    assert not os.path.exists(os.path.join(env.home, "fresh"))


# ---- container paths ----

TARGET_REFUSALS = [
    ("data", "must be an absolute path; use a path such as /data"),
    ("/", "/ is the container's root directory"),
    ("//", "/ is the container's root directory"),
    ("/etc", "/etc is a system directory in the container"),
    ("/usr/local/data", "/usr/local/data lies in the container's system directory /usr"),
    ("/var/tmp", "lies in the container's system directory /var"),
    ("/proc/", "/proc is a system directory in the container"),
    ("/opt", "/opt would hide the container's /opt/labdeck"),
    ("/opt/labdeck/lib", "lies in the container's system directory /opt/labdeck"),
    ("/data/../etc", "must not contain '..'"),
    ("/data:ro", "must not contain ':'"),
]


@pytest.mark.parametrize("target, expected", TARGET_REFUSALS)
def test_container_path_refusals(env, target, expected):
    assert expected in refused(env, [row("~", target)], "mounts[0].container_path")


@pytest.mark.parametrize("first, second", [("/data", "/data/"), ("/data", "//data"), ("/a/b", "/a/./b")])
def test_duplicate_container_paths_are_refused(env, first, second):
    rows = [row("~/a", first), row("", ""), row("~/b", second)]
    normalized = first
    assert refused(env, rows) == f"mounts[2].container_path: {normalized} is already used by mounts[0]"


def test_protected_container_paths_are_configurable(env):
    policy = PathPolicy(user_storage_root=env.policy.user_storage_root, protected_container_paths=["/scratch/"])
    with pytest.raises(OptionError, match="/scratch is a system directory in the container"):
        policy.check_mappings(ALICE, [row("~", "/scratch")])
    assert policy.check_mappings(ALICE, [row("~", "/etc")])[0].container_path == "/etc"


# ---- accepted mappings ----

ACCEPTED = [
    # host, container, read_only given -> host (resolved), container, read_only, root
    ("~", "/home/jovyan/work", None, "{home}", "/home/jovyan/work", False, "storage"),
    ("~/", "/data", "rw", "{home}", "/data", False, "storage"),
    ("~", "/data", "ro", "{home}", "/data", True, "storage"),
    (" ~/real ", " /data/ ", "on", "{home}/real", "/data", True, "storage"),
    ("{home}/real", "//data//x/", False, "{home}/real", "/data/x", False, "storage"),
    ("~/inlink", "/tmp/in", None, "{home}/real", "/tmp/in", False, "storage"),
    ("~/file.txt", "/data/file.txt", "1", "{home}/file.txt", "/data/file.txt", True, "storage"),
    ("{shared}/imagenet", "/data", True, "{shared}/imagenet", "/data", True, "imagenet"),
    ("{shared}/imagenet", "/data", None, "{shared}/imagenet", "/data", True, "imagenet"),
    ("{shared}/imagenet/latest", "/data", "ro", "{shared}/imagenet/train", "/data", True, "imagenet"),
    ("{shared}/imagenet/labels.txt", "/l.txt", "true", "{shared}/imagenet/labels.txt", "/l.txt", True, "imagenet"),
    ("~/dataset", "/data", "ON", "{shared}/imagenet", "/data", True, "imagenet"),
    ("{shared}/data/", "/srv/d", "yes", "{shared}/data", "/srv/d", True, "data"),
]


@pytest.mark.parametrize("host, target, read_only, want_host, want_target, want_ro, want_root", ACCEPTED)
def test_accepted_mappings(env, host, target, read_only, want_host, want_target, want_ro, want_root):
    mounts = env.policy.check_mappings(ALICE, [row(fill(env, host), target, read_only)])
    assert mounts == [Mount(fill(env, want_host), want_target, want_ro, want_root)]


def test_missing_storage_directories_are_created(env):
    mounts = env.policy.check_mappings(ALICE, [row("~/new/deep", "/a"), row(env.home + "/other/x", "/b")])
    assert [m.host_path for m in mounts] == [env.home + "/new/deep", env.home + "/other/x"]
    assert all(os.path.isdir(m.host_path) for m in mounts)


def test_blank_rows_and_no_rows(env):
    blank = [{"host_path": "", "container_path": "  ", "read_only": "on"}, {}]
    assert env.policy.check_mappings(ALICE, None) == []
    assert env.policy.check_mappings(ALICE, []) == []
    assert env.policy.check_mappings(ALICE, blank) == []
    assert len(env.policy.check_mappings(ALICE, [*blank, row("~")])) == 1


def test_max_mounts_counts_only_filled_rows(env):
    env.policy.max_mounts = 2
    rows = [row("~/a", "/a"), row("", ""), row("~/b", "/b")]
    assert len(env.policy.check_mappings(ALICE, rows)) == 2
    assert refused(env, [*rows, row("~/c", "/c")]).startswith("mounts: at most 2 path mappings")


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is only set when running as root")
def test_created_storage_is_owned_by_the_container_user(env):
    env.policy.check_mappings(ALICE, [row("~/made/here", "/data")])
    for path in (env.home, env.home + "/made", env.home + "/made/here"):
        info = os.stat(path)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, GID, 0o750), path


# ---- roots ----


def test_user_storage_is_per_user_and_escaped(env):
    path = env.policy.user_storage("Bob.Smith")
    assert path == os.path.join(env.tmp, "storage", escape_name("Bob.Smith"))
    assert os.path.isdir(path) and path != env.policy.user_storage("bob")
    assert env.policy.user_storage("Bob.Smith") == path  # idempotent


def test_roots_for_lists_own_storage_first_then_shared(env):
    assert env.policy.roots_for(ALICE) == [
        Root("storage", env.home, False, "Your storage"),
        Root("imagenet", env.shared + "/imagenet", True, "Shared data set: imagenet (ImageNet 2012)"),
        Root("data", env.shared + "/data", True, "Shared data set: data"),
    ]


def test_shared_roots_limited_to_groups(tmp_path):
    (tmp_path / "vision").mkdir()
    policy = PathPolicy(
        user_storage_root=str(tmp_path / "storage"),
        shared_roots=[{"name": "vision", "path": str(tmp_path / "vision"), "groups": ["cv"]}],
    )
    assert [r.name for r in policy.roots_for(Requester("carol", frozenset({"cv"})))] == ["storage", "vision"]
    assert [r.name for r in policy.roots_for(ALICE)] == ["storage"]
    message = str(pytest.raises(OptionError, policy.check_mappings, ALICE, [row(str(tmp_path / "vision"))]).value)
    assert "is outside the places you may map: ~ (your storage)" in message


def test_default_storage_root_follows_the_platform(tmp_path, monkeypatch):
    platform = Platform(data_dir=str(tmp_path / "d"))
    assert platform.paths.user_storage_root == str(tmp_path / "d" / "storage")
    monkeypatch.setenv("LABDECK_DATA_DIR", str(tmp_path / "env"))
    assert PathPolicy().user_storage_root == str(tmp_path / "env" / "storage")


# ---- the admin's configuration ----

BAD_STORAGE_ROOTS = [
    ("/", "/ is a system directory"),
    ("/etc", "/etc is a system directory"),
    ("/usr/share/storage", "lies in the system directory /usr"),
    ("/var", "/var contains the system directory /var/run"),
    ("/var/lib/docker/x", "lies in the system directory /var/lib/docker"),
    ("", "must not be empty"),
]


@pytest.mark.parametrize("path, expected", BAD_STORAGE_ROOTS)
def test_bad_user_storage_root_is_refused(path, expected):
    with pytest.raises(TraitError) as info:
        PathPolicy(user_storage_root=path)
    assert "PathPolicy.user_storage_root" in str(info.value) and expected in str(info.value)


BAD_SHARED_ROOTS = [
    ({"name": "all", "path": "/"}, "/ is a system directory"),
    ({"name": "run", "path": "/var/run"}, "is a system directory"),
    ({"name": "docs", "path": "/usr/share/doc"}, "lies in the system directory /usr"),
    ({"name": "sock", "path": "{tmp}-engine"}, "contains the Docker socket {tmp}-engine/docker.sock"),
    ({"name": "rel", "path": "datasets"}, "path must be an absolute host path"),
    ({"name": "../x", "path": "{tmp}"}, "name must be letters, digits"),
    ({"name": "storage", "path": "{tmp}/x"}, "(not 'storage')"),
    ({"name": "x", "path": "{tmp}/x", "mode": "rw"}, "unknown keys ['mode']; allowed: name, path"),
    ({"name": "x", "path": "{tmp}/x", "groups": "cv"}, "groups must be a list"),
    ({"name": "big", "path": "{tmp}"}, "overlaps user_storage_root"),
    ({"name": "inner", "path": "{tmp}/storage/alice"}, "overlaps user_storage_root"),
]


@pytest.mark.parametrize("entry, expected", BAD_SHARED_ROOTS)
def test_bad_shared_root_is_refused(tmp_path, monkeypatch, entry, expected):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}-engine/docker.sock")
    entry = {key: value.format(tmp=tmp_path) if isinstance(value, str) else value for key, value in entry.items()}
    with pytest.raises(TraitError) as info:
        PathPolicy(user_storage_root=str(tmp_path / "storage"), shared_roots=[entry])
    assert "PathPolicy.shared_roots" in str(info.value)
    assert expected.format(tmp=tmp_path) in str(info.value)


def test_duplicate_shared_root_names_are_refused(tmp_path):
    entries = [{"name": "d", "path": str(tmp_path / "a")}, {"name": "d", "path": str(tmp_path / "b")}]
    with pytest.raises(TraitError, match=r"shared_roots\[1\]: name 'd' is used twice"):
        PathPolicy(user_storage_root=str(tmp_path / "storage"), shared_roots=entries)


def test_roots_must_not_hold_the_platform_data(tmp_path):
    platform = Platform(data_dir=str(tmp_path / "data"))
    with pytest.raises(TraitError, match="contains the platform's data directory"):
        PathPolicy(parent=platform, shared_roots=[{"name": "all", "path": str(tmp_path)}])
    with pytest.raises(TraitError, match="contains the platform's data directory"):
        PathPolicy(parent=platform, user_storage_root=str(tmp_path / "data"))
    with pytest.raises(TraitError, match="/etc/storage lies in the system directory /etc"):
        PathPolicy(parent=Platform(data_dir="/etc")).user_storage_root


def test_a_link_swapped_in_after_the_check_cannot_redirect_creation(env):
    # As if ~/outlink had been a directory when checked and a container swapped in a link before mkdir.
    target = env.home + "/outlink/planted"
    with pytest.raises(OptionError, match=r"mounts\[0\].host_path: ~/outlink/planted changed while it was checked"):
        env.policy._make_dirs("mounts[0].host_path", ALICE, "~/outlink/planted", target)
    assert not os.path.exists(env.outside + "/planted")
