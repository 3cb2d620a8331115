"""First come, first served start slots: how many servers may start on one host at once.

A server's start-up is CPU-bound (about a core for one to two seconds). When ten people
press "Start my Server" together, sharing the CPU ten ways makes every one of them wait
for the last; letting about one start per core run and queueing the rest in arrival order
gets the first servers up sooner and the last about as soon as before.

A slot is held until the server answers, or for ``hold`` seconds at most, so that a start
waiting on something other than the CPU (a slow mount, a hung image) does not hold up
the line; a start that is cancelled while queued leaves the line.
"""

import asyncio
from collections import deque
from typing import Callable


class Slot:
    """One held slot; :meth:`release` gives it back (at most once)."""

    def __init__(self, slots: "StartSlots", hold: float | None):
        self._slots = slots
        self._timer = None
        self.released = False
        if hold is not None:
            self._timer = asyncio.get_running_loop().call_later(hold, self.release)

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        if self._timer is not None:
            self._timer.cancel()
        self._slots._give_back()


class StartSlots:
    """``limit`` slots handed out in arrival order; ``limit`` < 1 means no limit."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        # each waiter: [future set when it gets its slot, callback, the count it was last told]
        self._waiting: deque[list] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    async def acquire(self, hold: float | None = None,
                      on_wait: Callable[[int], None] | None = None) -> Slot:
        """Wait for a slot. ``on_wait(n)`` is called on joining the line and whenever it
        moves, with ``n`` the number of starts ahead (running ones included)."""
        if self.limit < 1 or (self.in_use < self.limit and not self._waiting):
            self.in_use += 1
            return Slot(self, hold)
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append([granted, on_wait, None])
        self._tell_positions()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._give_back()  # granted just as it was cancelled: pass the slot on
            else:
                self._remove(granted)
            raise
        return Slot(self, hold)

    def _give_back(self) -> None:
        self.in_use -= 1
        while self._waiting and self.in_use < self.limit:
            granted = self._waiting.popleft()[0]
            if not granted.done():
                self.in_use += 1
                granted.set_result(None)
        self._tell_positions()

    def _remove(self, granted: asyncio.Future) -> None:
        self._waiting = deque(w for w in self._waiting if w[0] is not granted)
        self._tell_positions()

    def _tell_positions(self) -> None:
        for i, waiter in enumerate(self._waiting):
            ahead = self.in_use + i
            if waiter[1] is not None and waiter[2] != ahead:
                waiter[2] = ahead
                waiter[1](ahead)
