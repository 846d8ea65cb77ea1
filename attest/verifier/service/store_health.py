"""The verifier's gRPC health follows its database: a replica whose PostgreSQL cannot be reached answers
NOT_SERVING for ``""`` and ``tdxsim.v1.VerifierService``, so load balancers and clients that check health
send their calls elsewhere, and SERVING again once the database answers (docs/fleet.md "The database",
docs/conventions.md §4).

A daemon thread probes the store (``Store.probe``: a ``SELECT 1`` through the pool) every ``PERIOD``
seconds, and a transaction that fails to reach the database switches to NOT_SERVING at once, without
waiting for the next probe. Nothing runs for a SQLite store: a local file cannot become unreachable, and
its failures (a full disk) belong to the statement that meets them.
"""

from __future__ import annotations

import sys
import threading

from attest.verifier.store import Store, StoreError
from wire.rpc_server import HealthControl

#: Seconds between probes.
PERIOD = 1.0
#: Seconds a probe waits for a pooled connection before it counts the database unreachable.
PROBE_TIMEOUT = 1.0


class StoreHealth:
    """Sets ``health`` SERVING or NOT_SERVING as ``store`` can be reached; :meth:`stop` ends the probing."""

    def __init__(
        self, store: Store, health: HealthControl, *, period: float = PERIOD, timeout: float = PROBE_TIMEOUT
    ) -> None:
        self._store = store
        self._health = health
        self._period = period
        self._timeout = timeout
        self._lock = threading.Lock()
        self._serving = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Probe from now on (a remote store only)."""
        if not self._store.remote or self._thread is not None:
            return
        self._store.on_unavailable = self._unreachable
        self._thread = threading.Thread(target=self._run, name="tdxsim verifier store health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the probing (a probe in progress finishes first, within its timeout)."""
        self._stop.set()
        self._store.on_unavailable = None
        if self._thread is not None:
            self._thread.join(self._timeout + 5)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self._store.probe(self._timeout)
            except StoreError as err:
                self._set(False, str(err))
            else:
                self._set(True, "")

    def _unreachable(self) -> None:
        self._set(False, "a request could not reach it")

    def _set(self, serving: bool, why: str) -> None:
        with self._lock:  # orders the switches; held only to compare and schedule, never across a probe
            if serving == self._serving or self._stop.is_set():
                return
            self._serving = serving
            self._health.set_serving(serving)
        if serving:
            print("tdxsim verifier: database reachable again, health SERVING", file=sys.stderr, flush=True)
        else:
            print(
                f"tdxsim verifier: database unreachable ({why}), health NOT_SERVING",
                file=sys.stderr,
                flush=True,
            )
