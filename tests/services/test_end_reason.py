"""The end reason users see for a workload whose container is not running (pure logic)."""

import pytest

from services.reconcile import Observed, end_reason


@pytest.mark.parametrize("status, reason", [
    (None, "lost: container vanished"),  # not there at all
    ("Exited (137) 2 seconds ago", "exited with code 137"),
    ("Exited (0) About a minute ago", "exited with code 0"),
    ("Exited (-1) 3 hours ago", "exited with code -1"),
    ("Removal In Progress", "lost: container vanished"),  # seen while `docker rm -f` runs
    ("Dead", "lost: container Dead"),
    ("", "lost: container stopped"),
])
def test_end_reason(status, reason):
    obs = None if status is None else Observed("dbg-1", "local", False, {}, status)
    assert end_reason(obs) == reason
