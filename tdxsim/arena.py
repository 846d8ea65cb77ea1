"""The live targets hostile calls aim at, and the invariants they must never break (docs/cli.md
"``tdxsim soak``").

An :class:`Arena` holds channels to a running host (and optionally a verifier), a pool of **fuzz TDs** that
hostile calls may do anything to (refilled as calls destroy them) and **sentinel TDs**: TDs that accepted a
few private pages, filled them with a unique random marker, and are then left alone. Nobody but a sentinel's
own guest or its host operator could change it, and :func:`tdxsim.hostile.draw` never sends such a call, so:

- a sentinel's pages keep their marker, its private page count stays what it was, and it stays alive;
- no response to any call, from any credential, ever carries a marker (no TD reads another's memory, the host
  never sees private plaintext; markers of retired sentinels stay secret too, whatever reuses their frames);
- ``HostRead`` of a sentinel's private memory is refused (gmem mode);
- the machine's counters agree with the TDs it lists, and once every TD is gone every KeyID and every physical
  frame is free again (:meth:`Arena.accounting`).

``tdxsim soak`` and ``tests/test_fuzz_rpc.py`` both use it with the generators of :mod:`tdxsim.hostile`.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest.formats import binding
from attest.formats.secret_jwe import open_secret
from guest.td import Td
from tdxsim.hostile import GUEST_SERVICE, HOST_SERVICE, VERIFIER_SERVICE, Hostile, Outcome, TdRef, World, send
from wire.credentials import with_bearer
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, attestation_pb2_grpc, guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
PAGE = 4096
MARKER_BYTES = 32
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 64 * MIB),
]
#: The private pages a sentinel accepts and fills with its marker: 4 KiB pages and one 2 MiB page.
SENTINEL_PAGES = ((0, 4 * PAGE, 0), (0x200000, 0x200000, 1))
SENTINEL_FILLED = ((0, 4 * PAGE), (0x200000, 2 * PAGE))
SENTINEL_MEMORY = 8 * MIB
FUZZ_MEMORY = 16 * MIB
#: A fuzz TD holding more private pages than this is recycled, so one hostile ACCEPT cannot starve the rest.
FUZZ_MAX_PAGES = 8192


@dataclass
class Sentinel:
    td_id: int
    credential: str
    marker: bytes
    private_pages: int = 0


@dataclass
class Finding:
    """An invariant violation or a contract breach, with what it takes to reproduce it."""

    kind: str
    what: str
    reproducer: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": self.kind, "what": self.what}
        if self.reproducer:
            out["reproducer"] = self.reproducer
        return out


class Arena:
    def __init__(
        self,
        host_address: str,
        host_admin: str,
        verifier_address: str = "",
        verifier_admin: str = "",
        *,
        fuzz_tds: int = 3,
        sentinels: int = 2,
        guest_prefixes: Sequence[str] = (),
        protected: Iterable[str] = (),
        timeout: float = 5.0,
    ) -> None:
        self.host_address = host_address
        self.host_admin = host_admin
        self.verifier_admin = verifier_admin
        self.timeout = timeout
        self.fuzz_target = fuzz_tds
        self.sentinel_target = sentinels
        self.guest_prefixes = tuple(guest_prefixes)
        self.protected = frozenset(protected)
        self.host = grpc.insecure_channel(host_address, options=CHANNEL_OPTIONS)
        self.admin = host_pb2_grpc.HostServiceStub(with_bearer(self.host, host_admin))
        self.verifier: grpc.Channel | None = None
        if verifier_address:
            self.set_verifier(verifier_address)
        self._lock = threading.RLock()
        self.fuzz: dict[int, TdRef] = {}
        self.sentinels: dict[int, Sentinel] = {}
        self.guests: dict[int, TdRef] = {}
        self.fds: collections.deque[int] = collections.deque(maxlen=32)
        self.gone: collections.deque[int] = collections.deque(maxlen=32)
        #: Every marker that ever was (retired sentinels' too) and other secrets no response may carry.
        self.secrets: list[bytes] = []
        self.tokens: list[str] = []
        self.corpus: dict[str, list[bytes]] = {}
        self.findings: list[Finding] = []
        self._next_name = 0

    # ---- channels ----------------------------------------------------------------------------------------

    def set_verifier(self, address: str) -> None:
        old, self.verifier = self.verifier, grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        if old is not None:
            old.close()

    def close(self) -> None:
        self.host.close()
        if self.verifier is not None:
            self.verifier.close()

    def channel_for(self, service: str) -> grpc.Channel | None:
        return self.verifier if service == VERIFIER_SERVICE else self.host

    # ---- the world hostile calls see ---------------------------------------------------------------------

    def world(self) -> World:
        with self._lock:
            tds = [
                *self.fuzz.values(),
                *(TdRef(s.td_id, s.credential, "sentinel") for s in self.sentinels.values()),
                *self.guests.values(),
            ]
            return World(
                tds=tds,
                host_admin=self.host_admin,
                verifier_admin=self.verifier_admin,
                tokens=list(self.tokens),
                corpus={k: list(v) for k, v in self.corpus.items()},
                protected=self.protected,
                gone=list(self.gone),
                fds=list(self.fds),
            )

    def _name(self, kind: str) -> str:
        with self._lock:
            self._next_name += 1
            return f"{kind}-{self._next_name}"

    # ---- running calls -----------------------------------------------------------------------------------

    def run(self, hostile: Hostile, timeout: float | None = None) -> Outcome:
        """Send one hostile call, learn what it created or destroyed, and check its responses for secrets."""
        channel = self.channel_for(hostile.method.service)
        if channel is None:
            return Outcome(grpc.StatusCode.UNAVAILABLE, details="no verifier in this arena")
        outcome = send(hostile, channel, self.timeout if timeout is None else timeout)
        self.learn(hostile, outcome)
        self.scan(hostile, outcome)
        return outcome

    def learn(self, hostile: Hostile, outcome: Outcome) -> None:
        if outcome.code != grpc.StatusCode.OK or not outcome.responses:
            return
        name = hostile.method.name
        if hostile.method.service == HOST_SERVICE and name in ("CreateTd", "LaunchTd"):
            reply = hostile.method.response_class.FromString(outcome.responses[0])
            with self._lock:
                self.fuzz[reply.td_id] = TdRef(reply.td_id, reply.credential, "fuzz")
                if name == "CreateTd" and reply.guest_memfd >= 0:
                    self.fds.append(reply.guest_memfd)
        elif hostile.method.service == VERIFIER_SERVICE and name == "GetNonce":
            # Fresh nonces let mutated quotes get past the nonce checks into verification proper.
            nonce = hostile.method.response_class.FromString(outcome.responses[0]).nonce
            with self._lock:
                self.corpus["nonce"] = [*self.corpus.get("nonce", [])[-7:], nonce]
        elif hostile.method.service == HOST_SERVICE and name == "CreateGuestMemfd":
            self.fds.append(hostile.method.response_class.FromString(outcome.responses[0]).fd)
        elif (hostile.method.service, name) in ((HOST_SERVICE, "DestroyTd"), (GUEST_SERVICE, "Attach")):
            # A lifeline that is let go destroys its TD, as DestroyTd does.
            for td_id in {getattr(hostile.request, "td_id", 0)}:
                with self._lock:
                    if self.fuzz.pop(td_id, None) is not None:
                        self.gone.append(td_id)

    def scan(self, hostile: Hostile, outcome: Outcome) -> None:
        """A response that carries a marker or a secret is a leak, whoever asked."""
        texts = [*outcome.responses, outcome.details.encode("utf-8", "replace")]
        with self._lock:
            leaked = [s for s in self.secrets if any(s in text for text in texts)]
        for secret in leaked:
            self.finding(
                "leak",
                f"{hostile.describe()} returned a sentinel marker or secret ({secret[:8].hex()}…)",
                hostile.reproducer(),
            )

    def finding(self, kind: str, what: str, reproducer: dict[str, object] | None = None) -> None:
        with self._lock:
            self.findings.append(Finding(kind, what, reproducer or {}))

    # ---- TDs ---------------------------------------------------------------------------------------------

    def _guest(self, td: host_pb2.CreateTdResponse) -> guest_pb2_grpc.TdGuestServiceStub:
        return guest_pb2_grpc.TdGuestServiceStub(with_bearer(self.host, td.credential))

    def create_fuzz_td(self) -> TdRef:
        td = self.admin.CreateTd(
            host_pb2.CreateTdRequest(memory_bytes=FUZZ_MEMORY, name=self._name("fuzz")), timeout=self.timeout
        )
        self.admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=self.timeout)
        ref = TdRef(td.td_id, td.credential, "fuzz")
        with self._lock:
            self.fuzz[td.td_id] = ref
            self.fds.append(td.guest_memfd)
        return ref

    def create_sentinel(self) -> Sentinel:
        """A TD that accepts a few private pages (4 KiB ones and a 2 MiB one), fills them with its marker
        and is then left alone."""
        td = self.admin.CreateTd(
            host_pb2.CreateTdRequest(memory_bytes=SENTINEL_MEMORY, name=self._name("sentinel")),
            timeout=self.timeout,
        )
        self.admin.FinalizeTd(host_pb2.FinalizeTdRequest(td_id=td.td_id), timeout=self.timeout)
        marker = b"SNTL" + secrets.token_bytes(MARKER_BYTES - 4)
        guest = self._guest(td)
        # As the guest library accepts: 2M where it may, then 4K (a no-op warning after a 2M success).
        accepts = [
            guest_pb2.Instruction(accept=guest_pb2.AcceptRange(gpa=gpa, length=length, level=level))
            for gpa, length, top in SENTINEL_PAGES
            for level in range(top, -1, -1)
        ]
        guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=accepts), timeout=30)
        writes = [guest_pb2.GpaData(gpa=gpa, data=_filled(marker, length)) for gpa, length in SENTINEL_FILLED]
        guest.WriteMemory(guest_pb2.WriteMemoryRequest(td_id=td.td_id, writes=writes), timeout=self.timeout)
        sentinel = Sentinel(td.td_id, td.credential, marker)
        listed = {t.td_id: t for t in self.admin.ListTds(host_pb2.ListTdsRequest(), timeout=self.timeout).tds}
        sentinel.private_pages = listed[td.td_id].private_pages
        with self._lock:
            self.sentinels[td.td_id] = sentinel
            self.secrets.append(marker)
            self.fds.append(td.guest_memfd)
        return sentinel

    def setup(self) -> None:
        for _ in range(self.sentinel_target - len(self.sentinels)):
            self.create_sentinel()
        self.reconcile()

    def destroy(self, td_id: int) -> None:
        try:
            self.admin.DestroyTd(host_pb2.DestroyTdRequest(td_id=td_id), timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
        with self._lock:
            self.fuzz.pop(td_id, None)
            self.gone.append(td_id)

    def retire_sentinel(self) -> None:
        """Destroy the oldest sentinel and make a new one: its marker stays secret while its frames are
        reused by other TDs."""
        with self._lock:
            oldest = min(self.sentinels, default=None)
            if oldest is not None:
                self.sentinels.pop(oldest)
        if oldest is not None:
            self.destroy(oldest)
        self.create_sentinel()

    def list_tds(self) -> list[host_pb2.TdInfo]:
        return list(self.admin.ListTds(host_pb2.ListTdsRequest(), timeout=self.timeout).tds)

    def reconcile(self) -> None:
        """Bring the pools in line with the host: forget TDs that are gone, adopt guest processes' TDs,
        destroy strays and fuzz TDs that grew too big or too many, and refill the fuzz pool."""
        listed = {td.td_id: td for td in self.list_tds()}
        with self._lock:
            for td_id in [t for t in self.fuzz if t not in listed]:
                self.fuzz.pop(td_id)
                self.gone.append(td_id)
            self.guests = {
                td_id: self.guests.get(td_id, TdRef(td_id, "", "guest"))
                for td_id, td in listed.items()
                if td.name.startswith(self.guest_prefixes) and self.guest_prefixes
            }
            vanished = [s for s in self.sentinels.values() if s.td_id not in listed]
            known = set(self.fuzz) | set(self.sentinels) | set(self.guests)
            strays = [t for t in listed if t not in known]
            fat = [t for t, ref in self.fuzz.items() if listed[t].private_pages > FUZZ_MAX_PAGES]
            extra = sorted(self.fuzz)[: max(0, len(self.fuzz) - 2 * self.fuzz_target)]
        for sentinel in vanished:
            self.finding("sentinel", f"sentinel TD {sentinel.td_id} vanished without anyone destroying it")
            with self._lock:
                self.sentinels.pop(sentinel.td_id, None)
        for td_id in {*strays, *fat, *extra}:
            self.destroy(td_id)
        for _ in range(self.fuzz_target - len(self.fuzz)):
            self.create_fuzz_td()
        for _ in range(self.sentinel_target - len(self.sentinels)):
            self.create_sentinel()

    def teardown(self) -> None:
        """Destroy every TD this arena made or adopted as a stray (guest processes' TDs are theirs)."""
        with self._lock:
            mine = [*self.fuzz, *self.sentinels]
            self.sentinels.clear()
        for td_id in mine:
            self.destroy(td_id)
        known = set(self.guests)
        for td in self.list_tds():
            if td.td_id not in known and not (
                self.guest_prefixes and td.name.startswith(self.guest_prefixes)
            ):
                self.destroy(td.td_id)

    def wait_empty(self, seconds: float) -> bool:
        """Wait until the host lists no TD (a released lifeline destroys its TD shortly after)."""
        return wait_until(lambda: not self.list_tds(), seconds, 0.2)

    # ---- invariants --------------------------------------------------------------------------------------

    def check_sentinels(self) -> list[str]:
        """Every sentinel still holds its marker, its private page count and its life; the host cannot read
        its private memory. Returns the violations found (also recorded as findings)."""
        problems: list[str] = []
        listed = {td.td_id: td for td in self.list_tds()}
        with self._lock:
            sentinels = list(self.sentinels.values())
        for s in sentinels:
            info = listed.get(s.td_id)
            if info is None:
                problems.append(f"sentinel TD {s.td_id} is gone")
                continue
            if info.dead:
                problems.append(f"sentinel TD {s.td_id} is dead: {info.dead_reason}")
            if info.private_pages != s.private_pages:
                problems.append(
                    f"sentinel TD {s.td_id} holds {info.private_pages} private pages, not {s.private_pages}"
                )
            ranges = [guest_pb2.GpaRange(gpa=gpa, length=length) for gpa, length in SENTINEL_FILLED]
            guest = guest_pb2_grpc.TdGuestServiceStub(with_bearer(self.host, s.credential))
            try:
                data = guest.ReadMemory(
                    guest_pb2.ReadMemoryRequest(td_id=s.td_id, ranges=ranges), timeout=self.timeout
                ).data
                expected = [_filled(s.marker, length) for _, length in SENTINEL_FILLED]
                if list(data) != expected:
                    problems.append(f"sentinel TD {s.td_id}'s private pages no longer hold its marker")
            except grpc.RpcError as err:
                problems.append(f"sentinel TD {s.td_id} cannot read its own pages: {err.code().name}")
            for gpa, length in SENTINEL_FILLED:
                request = host_pb2.HostReadRequest(td_id=s.td_id, gpa=gpa, length=length)
                try:
                    seen = self.admin.HostRead(request, timeout=self.timeout).data
                except grpc.RpcError:
                    continue  # refused, as gmem mode must
                leak = " and returned its marker" if s.marker in seen else ""
                problems.append(
                    f"HostRead of sentinel TD {s.td_id}'s private GPA {gpa:#x} was not refused{leak}"
                )
        for problem in problems:
            self.finding("sentinel", problem)
        return problems

    def stats(self) -> host_pb2.GetStatsResponse:
        reply: host_pb2.GetStatsResponse = self.admin.GetStats(
            host_pb2.GetStatsRequest(), timeout=self.timeout
        )
        return reply

    def accounting(self, *, empty: bool = False) -> list[str]:
        """The counters agree with the TDs the host lists (read twice around GetStats, so a TD that changes
        meanwhile is not mistaken for a leak); with ``empty``, no TD is left and every KeyID and frame is
        free."""
        problems: list[str] = []
        for _ in range(5):
            before = self.list_tds()
            stats = self.stats()
            after = self.list_tds()
            if [(t.td_id, t.private_pages) for t in before] == [(t.td_id, t.private_pages) for t in after]:
                break
        else:
            return []  # never quiet: nothing to conclude
        held = sum(t.private_pages for t in before)
        if stats.private_pages != held:
            problems.append(f"GetStats private_pages {stats.private_pages} != {held} the listed TDs hold")
        if stats.tds != len(before):
            problems.append(f"GetStats tds {stats.tds} != {len(before)} listed")
        if stats.phys_pages_free + held > stats.phys_pages_total:
            problems.append(
                f"free pages {stats.phys_pages_free} + private pages {held} > total {stats.phys_pages_total}"
            )
        if stats.keyids_total - stats.keyids_free > len(before):
            problems.append(f"{stats.keyids_total - stats.keyids_free} KeyIDs in use by {len(before)} TDs")
        if empty:
            if before:
                problems.append(f"{len(before)} TDs left: {[(t.td_id, t.name) for t in before]}")
            if stats.keyids_free != stats.keyids_total:
                problems.append(f"KeyIDs free {stats.keyids_free} of {stats.keyids_total} with no TD left")
            if stats.phys_pages_free != stats.phys_pages_total:
                problems.append(
                    f"physical pages free {stats.phys_pages_free} of {stats.phys_pages_total} with no TD left"
                )
        for problem in problems:
            self.finding("accounting", problem)
        return problems

    def healthy(self, timeout: float = 5.0) -> dict[str, bool]:
        """Whether each server answers a health check (SERVING) within ``timeout``. The call waits for the
        channel to connect: a channel to a restarted server may share gRPC's subchannel to the old one, still
        in reconnect backoff, and without waiting would fail at once."""
        out = {}
        for name, channel in (("host", self.host), ("verifier", self.verifier)):
            if channel is None:
                continue
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=True
                )
                out[name] = reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                out[name] = False
        return out


def _filled(marker: bytes, length: int) -> bytes:
    return (marker * (length // len(marker) + 1))[:length]


def wait_until(predicate: object, seconds: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(step)
    return bool(predicate())  # type: ignore[operator]


@dataclass
class Evidence:
    """One successful attestation: what was sent and what came back."""

    quote: bytes
    event_log: bytes
    nonce: bytes
    tee_public_key: bytes
    token: str
    private_key: ec.EllipticCurvePrivateKey


class Probe:
    """A TD launched through the guest library (it holds its lifeline) that attests at a verifier. Its
    evidence seeds the generators' corpus (real quotes to mutate, a real token); across a verifier restart it
    shows what must survive one: its token still fetches its secret, its used nonce stays used, a nonce
    issued before the restart is still good after it."""

    def __init__(self, host_address: str, host_admin: str, image: host_pb2.TdImage, name: str) -> None:
        self.td, _ = Td.launch(host_address, image, name, admin_credential=host_admin)
        self.evidence: Evidence | None = None

    def close(self) -> None:
        self.td.close()

    def _quote_for(self, nonce: bytes) -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        spki = binding.spki_der(key.public_key())
        return self.td.quote(binding.report_data(nonce, spki)), spki, key

    def attest(self, verifier: grpc.Channel, policy: str, nonce: bytes | None = None) -> Evidence:
        stub = attestation_pb2_grpc.VerifierServiceStub(verifier)
        if nonce is None:
            nonce = stub.GetNonce(attestation_pb2.GetNonceRequest(), timeout=30).nonce
        quote, spki, key = self._quote_for(nonce)
        event_log = self.td.event_log()
        reply = stub.Attest(
            attestation_pb2.AttestRequest(
                quote=quote, event_log=event_log, nonce=nonce, tee_public_key=spki, policy=policy
            ),
            timeout=30,
        )
        self.evidence = Evidence(quote, event_log, nonce, spki, reply.token, key)
        return self.evidence

    def fetch(self, verifier: grpc.Channel, path: str) -> bytes:
        """The secret at ``path`` released to the probe's token, opened with its key."""
        assert self.evidence is not None
        reply = attestation_pb2_grpc.VerifierServiceStub(verifier).GetResource(
            attestation_pb2.GetResourceRequest(path=path),
            metadata=[("authorization", f"Bearer {self.evidence.token}")],
            timeout=30,
        )
        return open_secret(reply.jwe_json, self.evidence.private_key)

    def replay_refusal(self, verifier: grpc.Channel) -> str:
        """Send the last evidence again: the reason it is refused with, or "" when it is accepted."""
        assert self.evidence is not None
        e = self.evidence
        try:
            attestation_pb2_grpc.VerifierServiceStub(verifier).Attest(
                attestation_pb2.AttestRequest(
                    quote=e.quote, event_log=e.event_log, nonce=e.nonce, tee_public_key=e.tee_public_key
                ),
                timeout=30,
            )
        except grpc.RpcError as err:
            info = error_info(err)
            return str(info.reason) if info is not None else str(err.code().name)
        return ""
