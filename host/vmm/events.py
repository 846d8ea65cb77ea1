"""The VMM's event feed: exits, conversions, poison and lifecycle, fanned out to watchers (``WatchEvents``,
docs/grpc.md "HostService"; its bounds docs/conventions.md §6)."""

from __future__ import annotations

import contextlib
import enum
import queue
import threading
import time
from dataclasses import dataclass, field

from host.vmm.errors import Refusal, VmmError


class EventKind(enum.IntEnum):
    TD_CREATED = 1
    TD_FINALIZED = 2
    TD_DESTROYED = 3
    TD_DEAD = 4
    MEMORY_FAULT = 5
    MAP_GPA = 6
    CONVERSION = 7
    POISON = 8
    HOST_CRASH = 9
    HOST_ACCESS_REFUSED = 10


@dataclass(frozen=True)
class Event:
    kind: EventKind
    td_id: int = 0
    gpa: int = 0
    size: int = 0
    flags: int = 0
    detail: str = ""
    time: float = field(default_factory=time.time)


#: Concurrent watchers a host serves; each holds a server thread while it watches.
MAX_WATCHERS = 8


class EventBus:
    """Bounded per-watcher queues; a slow watcher loses its oldest events, never blocks the host."""

    def __init__(self, depth: int = 4096, max_watchers: int = MAX_WATCHERS) -> None:
        self._depth = depth
        self._max_watchers = max_watchers
        self._lock = threading.Lock()
        self._watchers: list[queue.Queue[Event | None]] = []

    def watch(self) -> queue.Queue[Event | None]:
        q: queue.Queue[Event | None] = queue.Queue(self._depth)
        with self._lock:
            if len(self._watchers) >= self._max_watchers:
                raise VmmError(
                    Refusal.RESOURCE_EXHAUSTED,
                    "TOO_MANY_WATCHERS",
                    f"{self._max_watchers} event feeds are open already; close one first",
                )
            self._watchers.append(q)
        return q

    def unwatch(self, q: queue.Queue[Event | None]) -> None:
        with self._lock:
            if q in self._watchers:
                self._watchers.remove(q)

    def publish(self, event: Event) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for q in watchers:
            while True:
                try:
                    q.put_nowait(event)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        q.get_nowait()

    def close(self) -> None:
        with self._lock:
            watchers, self._watchers = self._watchers, []
        for q in watchers:
            with contextlib.suppress(queue.Full):
                q.put_nowait(None)
