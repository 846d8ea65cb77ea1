"""When the caller of a request no longer waits for it (docs/conventions.md §6).

A gRPC call ends for its client when its deadline passes or it is cancelled; the server thread running it
does not notice by itself. The servicer hands the VMM a :class:`Cancellation` built from the call, and the
VMM and KVM ask it between bounded chunks of a long request (MapGPA pieces, fallocate chunks, accepted
pages, teardown), the way a signal to the vCPU thread interrupts KVM_RUN or fallocate with EINTR. The work
done before the check stays done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class Cancellation:
    """``deadline`` is a :func:`time.monotonic` instant (None: none); ``is_active`` says whether the call is
    still wanted (None: always)."""

    deadline: float | None = None
    is_active: Callable[[], bool] | None = None

    @classmethod
    def within(cls, seconds: float | None, is_active: Callable[[], bool] | None = None) -> Cancellation:
        """A cancellation for a call with ``seconds`` left (None: no deadline)."""
        return cls(None if seconds is None else time.monotonic() + seconds, is_active)

    def reason(self) -> str:
        """Empty while the work may go on, else :data:`DEADLINE_EXCEEDED` or :data:`CANCELLED`."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return DEADLINE_EXCEEDED
        if self.is_active is not None and not self.is_active():
            return CANCELLED
        return ""

    def __call__(self) -> bool:
        """True once the caller no longer waits (the form KVM takes as ``signal_pending``)."""
        return bool(self.reason())


#: A request nobody cancels.
NEVER = Cancellation()
