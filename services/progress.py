"""Progress of a long operation, followed live by any number of readers.

Used for spawn progress events (the hub's spawn-pending page) and, later, for snapshots,
cache copies and image builds.
"""

import asyncio
import time


class ProgressLog:
    """An append-only list of ``{"progress": 0-100, "message": str}`` events."""

    def __init__(self):
        self.events: list[dict] = []
        self.finished = False
        self._changed = asyncio.Event()

    def reset(self) -> None:
        self.events = []
        self.finished = False
        self._changed = asyncio.Event()

    def add(self, progress: int | None, message: str) -> None:
        event = {"message": message, "time": time.time()}
        if progress is not None:
            event["progress"] = int(progress)
        self.events.append(event)
        self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, idle_timeout: float = 600):
        """Yield every event, past and future, until finished (or idle for ``idle_timeout``)."""
        seen = 0
        while True:
            while seen < len(self.events):
                seen += 1
                yield {k: v for k, v in self.events[seen - 1].items() if k != "time"}
            if self.finished:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), idle_timeout)
            except asyncio.TimeoutError:
                return
