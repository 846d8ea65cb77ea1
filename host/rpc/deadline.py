"""A call's deadline and cancellation, handed to the VMM as a :class:`~host.vmm.cancel.Cancellation`
(docs/conventions.md §6).

The server keeps running a method after its client has given up; the VMM stops a long request between
bounded chunks once this says so, so that a dead call does not keep a TD busy.
"""

from __future__ import annotations

import grpc

from host.vmm.cancel import Cancellation


def cancellation(context: grpc.ServicerContext) -> Cancellation:
    """The call's deadline (``time_remaining()``, None when it has none) and whether it is still wanted
    (``is_active()``: false once the client cancelled, its deadline passed or the call ended)."""
    remaining = context.time_remaining()
    return Cancellation.within(None if remaining is None else float(remaining), context.is_active)
