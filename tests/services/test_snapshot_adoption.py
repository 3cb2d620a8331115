"""Which image in the engine a snapshot interrupted by a restart adopts (services.snapshots)."""

from datetime import datetime
from types import SimpleNamespace

import pytest

from services.snapshots import is_commit_of

BEGAN = datetime(2026, 12, 2, 6, 0, 0)
SNAPSHOT = SimpleNamespace(source_workload="dbg-42", created_at=BEGAN)


def engine_image(source="dbg-42", created="2026-12-02T06:00:07.123456789Z"):
    labels = {"labdeck.source": source} if source is not None else None
    return {"Id": "sha256:abc", "Created": created, "Config": {"Labels": labels}}


@pytest.mark.parametrize("info, adopted", [
    (engine_image(), True),                                            # committed 7 s after it began
    (engine_image(created="2026-12-02T05:59:30Z"), True),              # the engine's clock 30 s behind
    (engine_image(created="2026-12-02T05:58:00.5Z"), False),           # an older image of that name
    (engine_image(source="dbg-7"), False),                             # made from another session
    (engine_image(source=None), False),                                # not a snapshot at all
    ({"Id": "sha256:abc", "Created": "2026-12-02T06:00:07Z", "Config": None}, False),
])
def test_only_this_snapshots_commit_is_adopted(info, adopted):
    assert is_commit_of(info, SNAPSHOT) is adopted
