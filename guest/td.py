"""The guest kernel library: a TD's view of its platform, as the recipes a Linux TDX guest runs.

A :class:`Td` is one TD guest process's handle on its TD. The guest talks to the platform only over gRPC,
as a TD talks to the TDX module (TDCALL) and the VMM (TDVMCALL); ``guest`` never imports ``host``. Each recipe
mirrors a kernel function (Linux ``arch/x86/coco/tdx/tdx.c`` unless noted) and batches its instructions
into as few ``TdGuestService.Run`` requests as the semantics allow, because a round trip costs about 1 ms
(docs/conventions.md §8):

======================================  ==========================================================  =========
recipe                                  mirrors                                                     RPCs
======================================  ==========================================================  =========
:meth:`Td.read_many` / ``write_many``   plain loads/stores by GPA (shared bit from TDG.VP.INFO,     1 per
                                        docs/memory-model.md §4.1); ``ReadMemory`` /                16 MiB
                                        ``WriteMemory``
:meth:`Td.accept`                       ``tdx_accept_memory()`` / ``try_accept_one()``: 2M where     1
                                        aligned, 4K when the 2M ACCEPT fails (PAGE_SIZE_MISMATCH:
                                        mainline KVM maps TD memory at 4K); any other non-zero 4K
                                        status fails, PAGE_ALREADY_ACCEPTED included (§5)
:meth:`Td.map_gpa`                      ``tdx_map_gpa()``: RETRY resumes at R11 (3 tries without     1 (+1 per
                                        progress), INVALID_OPERAND fails; the VMM chunks ≤ 2 MiB     RETRY)
                                        (§2)
:meth:`Td.convert_to_shared`            ``set_memory_decrypted()``: MapGPA; private contents lost    1
:meth:`Td.convert_to_private`           ``set_memory_encrypted()``: MapGPA, then ACCEPT              2
:meth:`Td.rtmr_extend`                  ``tdx_mcall_extend_rtmr()`` + a CC event log entry (§8)      1
:meth:`Td.report`                       ``tdx_mcall_get_report0()`` (TDG.MR.REPORT)                  1
:meth:`Td.quote`                        ``tdx-guest`` driver: TDREPORT → GHCI buffer → GetQuote     2
======================================  ==========================================================  =========

Why a batch ends where it does: a ``Run`` executes its instructions without the guest looking at results in
between, so an instruction whose status decides what the guest does next (a TDVMCALL's R10) ends the batch.
MapGPA and the ACCEPT after it are therefore two requests; the 4K ACCEPT after a 2M attempt is not (it is a
no-op warning when the 2M one succeeded, and the result is read from whichever applied). A quote needs two
because the TDREPORT must pass through the guest (the vCPU copies it from private to shared memory).

Private memory is managed like Linux's unaccepted memory: :class:`guest.memory.PrivateAllocator` accepts
pages lazily when they are allocated; a :class:`guest.memory.BouncePool` region is converted to shared once
(swiotlb) and holds the GetQuote buffer. RTMR extends are recorded in a CC event log (docs/attestation.md §12,
via ``attest.formats.eventlog``) so a verifier can replay them.

The TD lives while its guest is attached: :class:`Td` holds the ``Attach`` stream (the lifeline) open in a
daemon thread; when the process exits or is killed, the host tears the TD down.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from attest.formats.eventlog import (
    ALG_SHA384,
    Event,
    SpecIdEvent,
    TaggedEvent,
    encode_event_log,
    replay,
    tagged_event,
)
from attest.formats.eventlog.ccel import (
    EV_EVENT_TAG,
    TDXSIM_EXTEND_EVENT_ID,
    TDXSIM_MEASURE_EVENT_ID,
    EventLog,
)
from guest import tdcall
from guest.connection import open_channel, td_channel
from guest.errors import (
    AccessDenied,
    BadRequest,
    GuestError,
    QuoteFailed,
    TdGone,
    TdxStatusError,
    from_rpc_error,
    malformed_response,
)
from guest.memory import BouncePool, OutOfMemory, PrivateAllocator
from wire import tdx_abi as abi
from wire.credentials import CredentialError, client_admin_credential, with_bearer
from wire.tdx_abi import PAGE_SIZE as PAGE
from wire.tls import TlsConfig, handshake_failure
from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
#: Bytes of reads or writes one request carries at most (the host allows 32 MiB, channels 64 MiB).
MAX_RPC_BYTES = 16 * MIB
#: Default deadline of one request (a 1 GiB ACCEPT takes seconds on the simulated module).
DEFAULT_TIMEOUT = 120.0
#: How long :meth:`Td.launch` waits for the host to answer at all (it may still be starting).
CONNECT_TIMEOUT = 10.0
#: Shared bounce-buffer pool at the top of guest memory (swiotlb-like).
DEFAULT_BOUNCE_BYTES = 2 * MIB
#: GHCI GetQuote buffer: header + TDREPORT in, header + quote (with its PCK chain) out.
QUOTE_BUFFER_BYTES = 64 * 1024
#: ``tdx_map_gpa()``: RETRY answers without forward progress tolerated before failing.
MAP_GPA_MAX_RETRIES_PER_PAGE = 3
#: How long to poll a GetQuote buffer that still says IN_FLIGHT (the kernel's getquote_timeout is 30 s).
GET_QUOTE_TIMEOUT = 30.0


# The private scratch page: TDREPORT (1024-aligned), REPORTDATA (64-aligned), RTMR extend data (64-aligned).
SCRATCH_REPORT = 0
SCRATCH_REPORTDATA = 1024
SCRATCH_RTMR_DATA = 1024 + 64

_MAP_GPA_REASONS: dict[int, str] = {
    abi.TdVmCallStatus.INVALID_OPERAND: "MAP_GPA_INVALID_OPERAND",
    abi.TdVmCallStatus.ALIGN_ERROR: "MAP_GPA_ALIGN_ERROR",
    abi.TdVmCallStatus.SUBFUNC_UNSUPPORTED: "MAP_GPA_SUBFUNC_UNSUPPORTED",
}


@dataclass(frozen=True)
class AcceptOutcome:
    """What an ACCEPT of one or more ranges did: pages newly accepted at 4K, 2 MiB units accepted at 2M,
    and 4K pages that were already accepted (the PAGE_ALREADY_ACCEPTED warning)."""

    accepted_4k: int = 0
    accepted_2m: int = 0
    already_accepted: int = 0

    @property
    def pages(self) -> int:
        return self.accepted_4k + 512 * self.accepted_2m


class _Counting(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Counts requests per method, so callers (and tests) can see how many round trips a recipe took."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, details: Any) -> None:
        with self._lock:
            self.calls[str(details.method).rsplit("/", 1)[-1]] += 1

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        self._count(details)
        return continuation(details, request)


def _split(items: Sequence[tuple[int, int]], limit: int) -> list[list[tuple[int, int, int, int]]]:
    """Group (gpa, length) items into batches of at most ``limit`` bytes, splitting large items.

    Returns batches of (item index, offset in item, gpa, length)."""
    batches: list[list[tuple[int, int, int, int]]] = []
    current: list[tuple[int, int, int, int]] = []
    size = 0
    for index, (gpa, length) in enumerate(items):
        offset = 0
        while offset < length or (length == 0 and offset == 0):
            n = min(length - offset, limit - size)
            current.append((index, offset, gpa + offset, n))
            size += n
            offset += n
            if size >= limit:
                batches.append(current)
                current, size = [], 0
            if length == 0:
                break
    if current:
        batches.append(current)
    return batches


class Td:
    """One TD as its guest sees it. Build with :meth:`launch` or :meth:`attach`; close with :meth:`close`
    (or use as a context manager), which drops the lifeline: the host then destroys the TD."""

    def __init__(
        self,
        channel: grpc.Channel,
        td_id: int,
        credential: str,
        *,
        memory_bytes: int | None = None,
        preaccepted: Sequence[tuple[int, int]] = (),
        lifeline: bool = True,
        owns_channel: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        bounce_bytes: int = DEFAULT_BOUNCE_BYTES,
    ) -> None:
        self.td_id = td_id
        self.credential = credential
        self.timeout = timeout
        self._channel = channel
        self._owns_channel = owns_channel
        self._counter = _Counting()
        self._stub = guest_pb2_grpc.TdGuestServiceStub(
            grpc.intercept_channel(td_channel(channel, credential), self._counter)
        )
        self._lock = threading.RLock()
        self._attach_call: Any = None
        self._attached = threading.Event()
        self._lifeline_error: GuestError | None = None
        self.lifeline_lost = threading.Event()
        try:
            info = self._call(self._stub.VpInfo, guest_pb2.VpInfoRequest(td_id=td_id))
            if info.gpa_width not in (48, 52):
                raise malformed_response(f"TDG.VP.INFO GPAW {info.gpa_width} (48 or 52)")
            self.gpa_width: int = info.gpa_width
            self.attributes: int = info.attributes
            #: TDG.VP.INFO GPAW → shared bit (docs/memory-model.md §4.1): bit 47 (GPAW 48) or 51 (GPAW 52).
            self.shared_bit: int = 1 << (info.gpa_width - 1)
            if lifeline:
                self._start_lifeline()
        except BaseException:
            self._close_channel()
            raise
        self.memory_bytes = memory_bytes
        self.allocator: PrivateAllocator | None = None
        self.bounce: BouncePool | None = None
        if memory_bytes:
            pool = min(bounce_bytes, memory_bytes // 2) // PAGE * PAGE
            self.bounce = BouncePool(memory_bytes - pool, pool) if pool else None
            reserved = [*preaccepted, (memory_bytes - pool, memory_bytes)]
            self.allocator = PrivateAllocator(memory_bytes, reserved, preaccepted)
        self._scratch: int | None = None
        self._pending_accept: list[tuple[int, int]] = []
        self.events: list[Event] = []
        #: RTMR0..3 as this guest's extends built them (the TDREPORT must agree).
        self.rtmrs = [bytes(48)] * 4

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def launch(
        cls,
        address: str,
        image: host_pb2.TdImage,
        name: str = "",
        *,
        admin_credential: str | None = None,
        tls: TlsConfig | None = None,
        **kwargs: Any,
    ) -> tuple[Td, host_pb2.LaunchTdResponse]:
        """Measured launch through ``HostService.LaunchTd``, then attach as this TD's guest. If attaching
        fails, the half-started TD is destroyed.

        Launching is the host operator's act: ``admin_credential`` is the host's admin credential (default:
        the file ``TDXSIM_ADMIN_CREDENTIAL_FILE`` names); the guest then speaks only with its TD's own
        credential. ``tls``: reach the host over TLS / mTLS."""
        if admin_credential is None:
            try:
                admin_credential = client_admin_credential(None)
            except CredentialError as err:
                raise AccessDenied(str(err), "ADMIN_CREDENTIAL_MISSING", "UNAUTHENTICATED") from None
        channel = open_channel(address, tls)
        try:
            grpc.channel_ready_future(channel).result(timeout=kwargs.pop("connect_timeout", CONNECT_TIMEOUT))
        except grpc.FutureTimeoutError:
            why = f"no host answers at {address}"
            if tls is not None:
                hint = "(or the TLS handshake fails: check the CA and the client certificate)"
                reason = handshake_failure(channel)
                why += f" over TLS: {reason}" if reason else f" over TLS {hint}"
            channel.close()
            raise TdGone(why, "HOST_UNREACHABLE", "UNAVAILABLE") from None
        try:
            admin = host_pb2_grpc.HostServiceStub(with_bearer(channel, admin_credential))
            launched = admin.LaunchTd(
                host_pb2.LaunchTdRequest(image=image, name=name),
                timeout=kwargs.get("timeout", DEFAULT_TIMEOUT),
                wait_for_ready=True,
            )
        except grpc.RpcError as err:
            channel.close()
            raise from_rpc_error(err) from None
        payload = [(p.gpa, p.gpa + len(p.data)) for p in image.payload]
        try:
            td = cls(
                channel,
                launched.td_id,
                launched.credential,
                memory_bytes=image.memory_bytes,
                preaccepted=payload,
                owns_channel=True,
                **kwargs,
            )
        except BaseException:
            with contextlib.suppress(grpc.RpcError):
                admin.DestroyTd(host_pb2.DestroyTdRequest(td_id=launched.td_id), timeout=10)
            channel.close()
            raise
        return td, launched

    @classmethod
    def attach(
        cls,
        address: str,
        td_id: int,
        credential: str,
        *,
        memory_bytes: int | None = None,
        tls: TlsConfig | None = None,
        **kwargs: Any,
    ) -> Td:
        """Attach to a running TD with its credential (``memory_bytes`` enables the allocator; ``tls``
        reaches the host over TLS / mTLS)."""
        return cls(
            open_channel(address, tls),
            td_id,
            credential,
            memory_bytes=memory_bytes,
            owns_channel=True,
            **kwargs,
        )

    def _start_lifeline(self) -> None:
        self._attach_call = self._stub.Attach(guest_pb2.AttachRequest(td_id=self.td_id))
        thread = threading.Thread(target=self._lifeline, name=f"td{self.td_id}-lifeline", daemon=True)
        thread.start()
        if not self._attached.wait(self.timeout):
            raise TdGone("the host did not confirm the Attach lifeline", "ATTACH_TIMEOUT")
        if self._lifeline_error is not None:
            raise self._lifeline_error

    def _lifeline(self) -> None:
        try:
            for _ in self._attach_call:
                self._attached.set()
        except grpc.RpcError as err:
            if err.code() is not grpc.StatusCode.CANCELLED:
                self._lifeline_error = from_rpc_error(err)
        finally:
            self.lifeline_lost.set()
            self._attached.set()

    def lifeline_gone(self) -> TdGone:
        """The :class:`TdGone` for a lifeline that ended (reason ``LIFELINE_LOST``; ``code`` and metadata
        ``cause`` say how: UNAVAILABLE when the host process died, an ErrorInfo reason such as
        ``TD_NOT_FOUND`` when the host ended the stream, ``STREAM_ENDED`` when it closed it without one)."""
        err = self._lifeline_error
        cause = err.reason if err is not None else "STREAM_ENDED"
        detail = f": {err.message}" if err is not None else ""
        return TdGone(
            f"the host ended TD {self.td_id}'s lifeline{detail}",
            "LIFELINE_LOST",
            err.code if err is not None else "",
            {**(err.metadata if err is not None else {}), "cause": cause},
        )

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` while the TD lives: the wait ends the moment the lifeline does (a dead host is
        noticed as soon as its connection closes, not when the time is up) and raises
        :meth:`lifeline_gone`. Without a lifeline (``lifeline=False``) a plain sleep."""
        if self.lifeline_lost.wait(seconds):
            raise self.lifeline_gone()

    def close(self) -> None:
        """Drop the lifeline (the host destroys the TD) and close the channel if this object opened it."""
        if self._attach_call is not None:
            self._attach_call.cancel()
            self._attach_call = None
        self._close_channel()

    def _close_channel(self) -> None:
        if self._owns_channel:
            self._channel.close()
            self._owns_channel = False

    def __enter__(self) -> Td:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def rpc_counts(self) -> Counter[str]:
        """Requests sent so far, per TdGuestService method."""
        return Counter(self._counter.calls)

    # ---- the raw batch --------------------------------------------------------------------------------
    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def run(
        self, instructions: Sequence[guest_pb2.Instruction], timeout: float | None = None
    ) -> list[guest_pb2.InstructionResult]:
        """Execute a batch of guest instructions in order, in one request (the hazmat entry point;
        :mod:`guest.tdcall` builds the instructions). Stops at the first failure (:class:`GuestError`)."""
        request = guest_pb2.RunRequest(td_id=self.td_id, instructions=instructions)
        results = list(self._call(self._stub.Run, request, timeout).results)
        if len(results) != len(instructions):
            raise malformed_response(f"{len(results)} results for {len(instructions)} instructions")
        return results

    def echo(self, payload: bytes) -> bytes:
        """A bare round trip on this TD's channel (the benchmark's baseline)."""
        return bytes(self._call(self._stub.Echo, guest_pb2.EchoRequest(payload=payload)).payload)

    def shared(self, gpa: int) -> int:
        """``gpa`` with the shared bit set."""
        return gpa | self.shared_bit

    # ---- memory accesses --------------------------------------------------------------------------------
    def read(self, gpa: int, length: int) -> bytes:
        if 0 < length <= MAX_RPC_BYTES:  # the common small access: no batching work
            request = guest_pb2.ReadMemoryRequest(
                td_id=self.td_id, ranges=[guest_pb2.GpaRange(gpa=gpa, length=length)]
            )
            data = self._call(self._stub.ReadMemory, request).data
            if len(data) != 1 or len(data[0]) != length:
                raise malformed_response(f"read of {length} bytes at 0x{gpa:x}")
            return bytes(data[0])
        return self.read_many([(gpa, length)])[0]

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Read every (gpa, length) range; many ranges per request (``ReadMemory``: the same vCPU run as
        ``Run`` with only reads, in a leaner message), at most 16 MiB per request."""
        parts: list[list[bytes]] = [[] for _ in ranges]
        for batch in _split(ranges, MAX_RPC_BYTES):
            request = guest_pb2.ReadMemoryRequest(
                td_id=self.td_id, ranges=[guest_pb2.GpaRange(gpa=gpa, length=n) for _, _, gpa, n in batch]
            )
            data = self._call(self._stub.ReadMemory, request).data
            if len(data) != len(batch) or any(len(d) != r[3] for r, d in zip(batch, data, strict=True)):
                raise malformed_response(f"read of {len(batch)} ranges")
            for (index, _, _, _), piece in zip(batch, data, strict=True):
                parts[index].append(piece)
        return [p[0] if len(p) == 1 else b"".join(p) for p in parts]

    def write(self, gpa: int, data: bytes) -> None:
        self.write_many([(gpa, data)])

    def write_many(self, writes: Sequence[tuple[int, bytes]]) -> None:
        """Write every (gpa, data); many writes per request (``WriteMemory``), at most 16 MiB per request."""
        views = [memoryview(data) for _, data in writes]
        for batch in _split([(gpa, len(data)) for gpa, data in writes], MAX_RPC_BYTES):
            items = []
            for index, offset, gpa, n in batch:
                data = writes[index][1]
                whole = n == len(data) and isinstance(data, bytes)
                items.append(
                    guest_pb2.GpaData(
                        gpa=gpa, data=data if whole else views[index][offset : offset + n].tobytes()
                    )
                )
            self._call(self._stub.WriteMemory, guest_pb2.WriteMemoryRequest(td_id=self.td_id, writes=items))

    # ---- TDG.MEM.PAGE.ACCEPT ----------------------------------------------------------------------------
    @staticmethod
    def _accept_plan(ranges: Sequence[tuple[int, int]]) -> list[tuple[bool, int, int]]:
        """``try_accept_one`` order per range: (try 2M first?, start, end) pieces."""
        plan: list[tuple[bool, int, int]] = []
        for gpa, length in ranges:
            pos, end = gpa, gpa + length
            while pos < end:
                if pos % abi.PAGE_SIZE_2M == 0 and end - pos >= abi.PAGE_SIZE_2M:
                    plan.append((True, pos, pos + abi.PAGE_SIZE_2M))
                    pos += abi.PAGE_SIZE_2M
                else:
                    stop = min(end, (pos // abi.PAGE_SIZE_2M + 1) * abi.PAGE_SIZE_2M)
                    if plan and not plan[-1][0] and plan[-1][2] == pos:
                        plan[-1] = (False, plan[-1][1], stop)
                    else:
                        plan.append((False, pos, stop))
                    pos = stop
        return plan

    def _accept_instructions(self, ranges: Sequence[tuple[int, int]]) -> tuple[list[Any], list[Any]]:
        for gpa, length in ranges:
            if gpa % PAGE or length % PAGE or length <= 0:
                raise BadRequest(f"accept 0x{gpa:x}+0x{length:x}: not whole pages", "UNALIGNED")
            if gpa & self.shared_bit:
                raise BadRequest(f"accept 0x{gpa:x}: a shared GPA cannot be accepted", "SHARED_GPA")
        plan = self._accept_plan(ranges)
        instructions: list[Any] = []
        for try_2m, start, end in plan:
            if try_2m:
                instructions.append(tdcall.accept(start, end - start, abi.AcceptLevel.PAGE_2M))
            instructions.append(tdcall.accept(start, end - start, abi.AcceptLevel.PAGE_4K))
        return plan, instructions

    @staticmethod
    def _accept_outcome(
        plan: Sequence[tuple[bool, int, int]], results: Sequence[guest_pb2.InstructionResult], strict: bool
    ) -> AcceptOutcome:
        accepted_4k = accepted_2m = already = 0
        pos = 0
        for try_2m, start, _ in plan:
            if try_2m:
                big = results[pos]
                pos += 1
                if big.status == abi.TdxStatus.SUCCESS:
                    accepted_2m += 1
                    pos += 1  # the 4K follow-up found the 2M page: a no-op warning
                    continue
            small = results[pos]
            pos += 1
            accepted_4k += small.pages_accepted
            already += small.already_accepted
            status = small.status
            if status & abi.CLASS_MASK == abi.TdxStatus.PAGE_ALREADY_ACCEPTED:
                if strict:
                    raise TdxStatusError(
                        f"ACCEPT found {small.already_accepted} page(s) already accepted from 0x{start:x} "
                        "(Linux treats this as failure: the page was accepted before)",
                        "PAGE_ALREADY_ACCEPTED",
                        status,
                        start,
                    )
            elif status != abi.TdxStatus.SUCCESS:
                name = abi.status_name(status, detail_is_level=True)
                raise TdxStatusError(
                    f"TDG.MEM.PAGE.ACCEPT failed at 0x{start:x}: {name}",
                    name.split("|")[0],
                    status,
                    start,
                )
        return AcceptOutcome(accepted_4k, accepted_2m, already)

    def accept(self, gpa: int, length: int, *, strict: bool = True) -> AcceptOutcome:
        """TDG.MEM.PAGE.ACCEPT of [gpa, gpa + length) in one request (``tdx_accept_memory``)."""
        return self.accept_ranges([(gpa, length)], strict=strict)

    def accept_ranges(self, ranges: Sequence[tuple[int, int]], *, strict: bool = True) -> AcceptOutcome:
        """ACCEPT several ranges in one request. ``strict`` (default, like Linux): a page that was already
        accepted is a failure (:class:`TdxStatusError` ``PAGE_ALREADY_ACCEPTED``); otherwise it is counted."""
        plan, instructions = self._accept_instructions(ranges)
        outcome = self._accept_outcome(plan, self.run(instructions), strict)
        if self.allocator is not None:
            for gpa, length in ranges:
                self.allocator.mark_accepted(gpa, gpa + length)
        return outcome

    # ---- TDG.VP.VMCALL<MapGPA> and conversions ----------------------------------------------------------
    def map_gpa(self, gpa: int, size: int) -> int:
        """TDG.VP.VMCALL<MapGPA> as ``tdx_map_gpa()``: on RETRY resume at the GPA the VMM returned in R11
        (which must lie inside the range), giving up after 3 answers without progress; INVALID_OPERAND and any
        other failure raise :class:`TdxStatusError`. Returns the ≤ 2 MiB chunks the VMM handled."""
        start, end = gpa, gpa + size
        retries = chunks = 0
        while True:
            (result,) = self.run([tdcall.map_gpa(start, end - start)])
            chunks += result.chunks
            if result.status == abi.TdVmCallStatus.SUCCESS:
                return chunks
            if result.status != abi.TdVmCallStatus.RETRY:
                reason = _MAP_GPA_REASONS.get(result.status, "MAP_GPA_FAILED")
                raise TdxStatusError(
                    f"MapGPA 0x{start:x}+0x{end - start:x} failed at 0x{result.failed_gpa:x}: {reason}",
                    reason,
                    result.status,
                    result.failed_gpa,
                )
            failed = result.failed_gpa
            if not start <= failed < end:
                raise TdxStatusError(
                    f"MapGPA RETRY names 0x{failed:x}, outside 0x{start:x}..0x{end:x} (untrusted R11)",
                    "MAP_GPA_BAD_RETRY_GPA",
                    result.status,
                    failed,
                )
            if failed == start:
                retries += 1
                if retries >= MAP_GPA_MAX_RETRIES_PER_PAGE:
                    raise TdxStatusError(
                        f"MapGPA made no progress at 0x{start:x} after {retries} RETRY answers",
                        "MAP_GPA_RETRY_EXHAUSTED",
                        result.status,
                        failed,
                    )
            else:
                start, retries = failed, 0

    def _check_range(self, gpa: int, size: int) -> int:
        gpa &= ~self.shared_bit
        if gpa % PAGE or size % PAGE or size <= 0:
            raise BadRequest(f"0x{gpa:x}+0x{size:x} is not whole pages", "UNALIGNED")
        return gpa

    def convert_to_shared(self, gpa: int, size: int) -> int:
        """``set_memory_decrypted``: MapGPA with the shared bit. The private contents are destroyed.
        Returns the MapGPA chunks."""
        gpa = self._check_range(gpa, size)
        chunks = self.map_gpa(gpa | self.shared_bit, size)
        if self.allocator is not None:
            self.allocator.mark_converted_to_shared(gpa, gpa + size)
        return chunks

    def convert_to_private(self, gpa: int, size: int) -> AcceptOutcome:
        """``set_memory_encrypted``: MapGPA without the shared bit, then ACCEPT (zeroed pages)."""
        gpa = self._check_range(gpa, size)
        self.map_gpa(gpa, size)
        return self.accept(gpa, size)

    # ---- private allocator and bounce buffers ---------------------------------------------------------
    def _need_allocator(self) -> PrivateAllocator:
        if self.allocator is None:
            raise BadRequest("the TD's memory size is unknown: pass memory_bytes", "NO_MEMORY_MAP")
        return self.allocator

    def alloc(self, size: int, align: int = PAGE) -> int:
        """Private memory ready to use: pages not yet accepted are accepted now (one request, none when
        all were accepted before)."""
        allocator = self._need_allocator()
        try:
            gpa, missing = allocator.alloc(size, align)
        except OutOfMemory as err:
            raise BadRequest(str(err), "OUT_OF_PRIVATE_MEMORY") from None
        if missing:
            try:
                self.accept_ranges([(s, e - s) for s, e in missing])
            except BaseException:
                allocator.free(gpa)
                raise
        return gpa

    def free(self, gpa: int) -> None:
        self._need_allocator().free(gpa)

    def _bounce_pool(self) -> BouncePool:
        if self.bounce is None:
            raise BadRequest("no bounce-buffer pool: pass memory_bytes", "NO_MEMORY_MAP")
        if not self.bounce.shared:
            with self._lock:
                if not self.bounce.shared:
                    self.convert_to_shared(self.bounce.base, self.bounce.size)
                    self.bounce.shared = True
        return self.bounce

    @contextlib.contextmanager
    def bounce_buffer(self, size: int) -> Iterator[int]:
        """A shared buffer (GPA with the shared bit) from the pool for the duration of the block."""
        pool = self._bounce_pool()
        try:
            gpa = pool.alloc(size)
        except OutOfMemory as err:
            raise BadRequest(str(err), "BOUNCE_POOL_EXHAUSTED") from None
        try:
            yield gpa | self.shared_bit
        finally:
            pool.free(gpa)

    # ---- measurement and evidence -------------------------------------------------------------------------
    def _scratch_page(self) -> tuple[int, list[Any]]:
        """The private scratch page and, the first time, the ACCEPT to put in front of its first batch."""
        if self._scratch is None:
            allocator = self._need_allocator()
            gpa, missing = allocator.alloc(PAGE)
            self._scratch = gpa
            self._pending_accept = [(s, e - s) for s, e in missing]
        if self._pending_accept:
            return self._scratch, [tdcall.accept(g, n) for g, n in self._pending_accept]
        return self._scratch, []

    def _run_with_scratch(self, prefix: list[Any], body: list[Any]) -> list[guest_pb2.InstructionResult]:
        results = self.run([*prefix, *body])
        for result in results[: len(prefix)]:
            if abi.is_error(result.status):
                name = abi.status_name(result.status, detail_is_level=True)
                raise TdxStatusError(
                    f"ACCEPT of the scratch page failed: {name}",
                    "SCRATCH_ACCEPT_FAILED",
                    result.status,
                    self._scratch or 0,
                )
        if prefix:
            assert self.allocator is not None and self._scratch is not None
            self.allocator.mark_accepted(self._scratch, self._scratch + PAGE)
            self._pending_accept = []
        return results[len(prefix) :]

    def rtmr_extend(
        self, index: int, digest: bytes, *, event_type: int = EV_EVENT_TAG, event_data: bytes | None = None
    ) -> bytes:
        """TDG.MR.RTMR.EXTEND of ``digest`` (48 bytes, written to the private scratch page in the same
        request) into RTMR[index], logged as a CC event (CCMR index + 1) of ``event_type`` with ``event_data``
        verbatim. Without ``event_data`` an ``EV_EVENT_TAG`` event carries an empty tagged event with ID
        ``TDXSIM_EXTEND_EVENT_ID`` (a digest whose data the log does not hold). Returns the new RTMR value."""
        if not 0 <= index <= 3:
            raise BadRequest(f"RTMR index {index} is not 0..3", "BAD_RTMR_INDEX")
        if len(digest) != abi.MR_SIZE:
            raise BadRequest(f"an RTMR extend takes 48 bytes, got {len(digest)}", "BAD_DIGEST_SIZE")
        if event_data is None:
            event_data = TaggedEvent(TDXSIM_EXTEND_EVENT_ID).encode() if event_type == EV_EVENT_TAG else b""
        with self._lock:
            scratch, prefix = self._scratch_page()
            data_gpa = scratch + SCRATCH_RTMR_DATA
            self._run_with_scratch(
                prefix, [tdcall.write(data_gpa, bytes(digest)), tdcall.rtmr_extend(data_gpa, index)]
            )
            self.events.append(
                Event(index + 1, event_type, ((ALG_SHA384, bytes(digest)),), bytes(event_data))
            )
            self.rtmrs[index] = hashlib.sha384(self.rtmrs[index] + digest).digest()
            return self.rtmrs[index]

    def measure(self, index: int, data: bytes, *, event_id: int = TDXSIM_MEASURE_EVENT_ID) -> bytes:
        """Extend RTMR[index] with SHA-384(``data``), logged as an ``EV_EVENT_TAG`` event whose
        ``TCG_PCClientTaggedEvent`` holds ``event_id`` and ``data`` (the tagged data a verifier hashes to
        check the digest; docs/attestation.md §12)."""
        event = tagged_event(index + 1, bytes(data), event_id)
        digest = event.digest(ALG_SHA384)
        assert digest is not None
        return self.rtmr_extend(index, digest, event_type=EV_EVENT_TAG, event_data=event.data)

    def event_log(self) -> bytes:
        """This guest's RTMR extends as a TCG crypto-agile CC event log, SHA-384 (docs/attestation.md §12)."""
        return encode_event_log(SpecIdEvent(), tuple(self.events))

    def replayed_rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        """RTMR0..3 replayed from the event log, as a verifier computes them."""
        return replay(EventLog(SpecIdEvent(), tuple(self.events)))

    def report(self, report_data: bytes = bytes(64)) -> bytes:
        """TDG.MR.REPORT: the 1024-byte TDREPORT_STRUCT for 64 bytes of REPORTDATA, in one request (write
        REPORTDATA to the private scratch page, REPORT, read the report back)."""
        if len(report_data) != abi.REPORTDATA_SIZE:
            raise BadRequest(f"REPORTDATA must be 64 bytes, got {len(report_data)}", "BAD_REPORTDATA_SIZE")
        with self._lock:
            scratch, prefix = self._scratch_page()
            report_gpa, data_gpa = scratch + SCRATCH_REPORT, scratch + SCRATCH_REPORTDATA
            results = self._run_with_scratch(
                prefix,
                [
                    tdcall.write(data_gpa, bytes(report_data)),
                    tdcall.report(report_gpa, data_gpa),
                    tdcall.read(report_gpa, abi.TDREPORT_SIZE),
                ],
            )
            if len(results[-1].data) != abi.TDREPORT_SIZE:
                raise malformed_response(f"TDREPORT of {len(results[-1].data)} bytes")
            return bytes(results[-1].data)

    def quote(self, report_data: bytes = bytes(64)) -> bytes:
        """A DCAP quote for 64 bytes of REPORTDATA: :meth:`report`, then :meth:`quote_tdreport`."""
        return self.quote_tdreport(self.report(report_data))

    def quote_tdreport(self, tdreport: bytes) -> bytes:
        """TDG.VP.VMCALL<GetQuote> as the Linux ``tdx-guest`` driver does it: the GHCI buffer (version 1,
        status 0, in_len, the TDREPORT) in shared memory, GetQuote, then the buffer read back, in one request;
        the buffer is polled while its status says IN_FLIGHT. :class:`QuoteFailed` for QGS_UNAVAILABLE and
        ERROR."""
        with self.bounce_buffer(QUOTE_BUFFER_BYTES) as buf:
            header = abi.GET_QUOTE_HEADER.pack(abi.GET_QUOTE_VERSION, 0, len(tdreport), 0)
            results = self.run(
                [
                    tdcall.write(buf, header + bytes(tdreport)),
                    tdcall.get_quote(buf, QUOTE_BUFFER_BYTES),
                    tdcall.read(buf, QUOTE_BUFFER_BYTES),
                ]
            )
            if results[1].status != abi.TdVmCallStatus.SUCCESS:
                raise TdxStatusError(
                    f"TDVMCALL GetQuote failed with R10 0x{results[1].status:x}",
                    "GET_QUOTE_TDVMCALL_FAILED",
                    results[1].status,
                    buf,
                )
            raw = results[2].data
            if len(raw) != QUOTE_BUFFER_BYTES:
                raise malformed_response(f"GetQuote buffer of {len(raw)} bytes")
            deadline = time.monotonic() + GET_QUOTE_TIMEOUT
            while abi.GET_QUOTE_HEADER.unpack_from(raw)[1] == abi.GetQuoteStatus.IN_FLIGHT:
                if time.monotonic() > deadline:
                    raise QuoteFailed("GetQuote still in flight after 30 s", "GET_QUOTE_TIMEOUT", 0)
                time.sleep(0.05)
                raw = self.read(buf, QUOTE_BUFFER_BYTES)
            _, status, _, out_len = abi.GET_QUOTE_HEADER.unpack_from(raw)
            if status == abi.GetQuoteStatus.QGS_UNAVAILABLE:
                raise QuoteFailed(
                    "the host has no quoting service (QGS unavailable: no PCK provisioned)",
                    "QGS_UNAVAILABLE",
                    status,
                )
            if status != abi.GetQuoteStatus.SUCCESS:
                raise QuoteFailed(
                    f"the quoting enclave refused the TDREPORT (status 0x{status:016X})",
                    "GET_QUOTE_ERROR",
                    status,
                )
            if out_len > QUOTE_BUFFER_BYTES - abi.GET_QUOTE_HEADER.size:
                raise QuoteFailed(
                    f"quote length {out_len} overruns the buffer", "GET_QUOTE_BAD_LENGTH", status
                )
            return bytes(raw[abi.GET_QUOTE_HEADER.size : abi.GET_QUOTE_HEADER.size + out_len])
