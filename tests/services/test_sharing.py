"""The one sharing policy (caches and images) and the image pickers built on it, against a real
SQLite platform database."""

import pytest

from services import sharing
from services.accounts import AccountStore
from services.errors import OptionError
from services.identity import Requester
from services.images import kinds_label
from services.models import ImageMember, ImageState, UserImage
from tests.services.platform_fixtures import make_platform

BOB = Requester("bob", groups=frozenset({"vision"}))


@pytest.mark.parametrize("add, remove, field, message", [
    ("bob", [], "add", "must be a list"),
    ([], {"kind": "user"}, "remove", "must be a list"),
    ([{"kind": "team", "name": "x"}], [], "add[0]", "must be"),
    ([{"kind": "user"}], [], "add[0]", "must be"),
    ([{"kind": "user", "name": "   "}], [], "add[0]", "must be"),
    ([{"kind": "user", "name": "a" * 256}], [], "add[0]", "must be"),
    ([{"kind": "user", "name": "ok"}, "bob"], [], "add[1]", "must be"),
    ([], [{"kind": "group", "name": 7}], "remove[0]", "must be"),
])
def test_bad_member_changes_name_the_entry(add, remove, field, message):
    with pytest.raises(OptionError) as e:
        sharing.parse_changes(add, remove)
    assert e.value.field == field and message in str(e.value)


def test_changes_are_trimmed_and_typed():
    add, remove = sharing.parse_changes([{"kind": "user", "name": " bob "}], [{"kind": "group", "name": "vision"}])
    assert add == [sharing.Member("user", "bob")] and remove == [sharing.Member("group", "vision")]


@pytest.mark.parametrize("members, expected", [
    ([], False),
    ([sharing.Member("user", "bob")], True),
    ([sharing.Member("user", "bobby")], False),
    ([sharing.Member("group", "vision")], True),
    ([sharing.Member("group", "nlp")], False),
    ([sharing.Member("user", "vision")], False),  # a user called like the department is not the department
    ([sharing.Member("group", "bob")], False),
])
def test_membership_by_name_or_department(members, expected):
    assert sharing.includes(members, BOB) is expected


@pytest.mark.parametrize("kinds, label", [
    (("notebook",), "for notebooks"),
    (("debug", "notebook"), "for notebooks and remote debug"),
    (("notebook", "debug", "job"), "for notebooks, remote debug and jobs"),
])
def test_kinds_label(kinds, label):
    assert kinds_label(kinds) == label


@pytest.fixture
def platform(tmp_path):
    p = make_platform(tmp_path)
    store = AccountStore(p.db)
    for name in ("alice", "bob", "carol"):
        store.create(name, f"{name}@example.org", "correct horse 1")
    return p


def saved_image(platform, owner, name, state=ImageState.saved):
    with platform.db.session() as s:
        image = UserImage(owner=owner, name=name, tag="v1", kind="debug", state=state.value,
                          repository=f"labdeck-users/{owner}/{name}", created_by=owner)
        s.add(image)
        s.flush()
        return image.id


def test_apply_changes_refuses_unknown_users_and_ignores_repeats(platform):
    image_id = saved_image(platform, "alice", "env")

    def change(add=(), remove=()):
        add, remove = sharing.parse_changes(list(add), list(remove))
        with platform.db.session() as s:
            rows = list(s.query(ImageMember).filter_by(image_id=image_id))
            return sharing.apply_changes(s, rows, add, remove,
                                         lambda m: ImageMember(image_id=image_id, kind=m.kind, name=m.name))

    with pytest.raises(OptionError, match=r"add\[1\]: no user is named 'bobb'"):
        change(add=[{"kind": "user", "name": "bob"}, {"kind": "user", "name": "bobb"}])
    assert change() == []  # the refused change left nothing
    assert change(add=[{"kind": "user", "name": "bob"}, {"kind": "group", "name": "vision"}]) == [
        sharing.Member("group", "vision"), sharing.Member("user", "bob")]
    assert len(change(add=[{"kind": "user", "name": "bob"}])) == 2  # twice is once
    assert change(remove=[{"kind": "user", "name": "bob"}, {"kind": "user", "name": "nobody"}]) == [
        sharing.Member("group", "vision")]


def test_pickers_offer_platform_own_and_shared_images_grouped(platform):
    saved_image(platform, "bob", "own-env")
    shared = saved_image(platform, "alice", "shared-env")
    saved_image(platform, "alice", "private-env")
    saved_image(platform, "alice", "still-saving", state=ImageState.saving)
    with platform.db.session() as s:
        s.add(ImageMember(image_id=shared, kind="group", name="vision"))
    for kind in ("notebook", "debug", "job"):
        choices = platform.catalog.images_for(BOB, kind)
        groups = {}
        for c in choices:
            groups.setdefault(c.group, []).append(c.title)
        assert groups["My images"] == ["own-env:v1"]
        assert groups["Shared with me"] == ["shared-env:v1 (from alice)"]
        assert list(groups)[-2:] == ["My images", "Shared with me"]
    with pytest.raises(OptionError, match="'labdeck-users/alice/private-env:v1' is not available to you"):
        platform.catalog.check(BOB, "debug", "labdeck-users/alice/private-env:v1")
    assert platform.catalog.check(BOB, "job", "labdeck-users/alice/shared-env:v1").group == "Shared with me"
    # carol, in no department and named by nobody, sees neither
    carol = [c.name for c in platform.catalog.images_for(Requester("carol"), "notebook")]
    assert not any("users/" in name for name in carol)
