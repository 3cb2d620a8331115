"""Start slots: arrival order, place in line, cancellation and the hold limit."""

import asyncio

import pytest

from services.start_slots import StartSlots


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


class Line:
    """Starts queued on one StartSlots, each recording what it was told and when it got in."""

    def __init__(self, limit, hold=None):
        self.slots = StartSlots(limit)
        self.hold = hold
        self.told: dict[str, list[int]] = {}
        self.order: list[str] = []
        self.held = {}
        self.tasks = {}

    def join(self, name):
        self.told[name] = []

        async def start():
            slot = await self.slots.acquire(hold=self.hold, on_wait=self.told[name].append)
            self.order.append(name)
            self.held[name] = slot

        self.tasks[name] = asyncio.ensure_future(start())


@pytest.mark.parametrize("limit, starts, at_once", [
    (1, 3, 1),
    (2, 5, 2),
    (4, 3, 3),
    (0, 6, 6),   # 0: no limit
])
async def test_at_most_limit_start_together_and_the_rest_in_arrival_order(limit, starts, at_once):
    line = Line(limit)
    names = [f"u{i}" for i in range(starts)]
    for name in names:
        line.join(name)
    await settle()
    assert line.order == names[:at_once]
    assert line.slots.in_use == at_once and line.slots.queued == starts - at_once
    # each one waiting was told how many start ahead of it (running ones included)
    for i, name in enumerate(names[at_once:]):
        assert line.told[name][0] == at_once + i
    for name in names:  # each finished start lets the next one in
        line.held[name].release()
        await settle()
    assert line.order == names
    assert line.slots.in_use == 0 and line.slots.queued == 0


async def test_the_line_moves_and_each_waiter_hears_its_new_place_once():
    line = Line(1)
    for name in ("a", "b", "c"):
        line.join(name)
    await settle()
    line.held["a"].release()
    await settle()
    assert line.told == {"a": [], "b": [1], "c": [2, 1]}


async def test_a_start_cancelled_in_line_leaves_it_and_those_behind_move_up():
    line = Line(1)
    for name in ("a", "b", "c"):
        line.join(name)
    await settle()
    line.tasks["b"].cancel()
    await settle()
    assert line.slots.queued == 1 and line.told["c"] == [2, 1]
    line.held["a"].release()
    await settle()
    assert line.order == ["a", "c"] and line.slots.in_use == 1


async def test_a_start_cancelled_just_as_it_got_its_slot_passes_it_on():
    line = Line(1)
    for name in ("a", "b", "c"):
        line.join(name)
    await settle()
    line.held["a"].release()  # b is granted the slot but has not run yet ...
    line.tasks["b"].cancel()  # ... and is cancelled now
    await settle()
    assert line.order == ["a", "c"] and line.slots.in_use == 1 and line.slots.queued == 0


async def test_a_slot_is_given_back_after_the_hold_and_a_later_release_changes_nothing():
    line = Line(1, hold=0.01)
    line.join("slow")
    line.join("next")
    await settle()
    assert line.order == ["slow"]
    await asyncio.wait_for(line.tasks["next"], 5)  # the slow start's hold ran out
    assert line.order == ["slow", "next"]
    line.held["slow"].release()
    line.held["slow"].release()
    assert line.slots.in_use == 1
    line.held["next"].release()
    assert line.slots.in_use == 0
