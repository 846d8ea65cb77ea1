"""The VMM: TD creation, vCPU exit handling and memory conversion (docs/memory-model.md §1–§3, §6;
QEMU ``kvm_convert_memory()``).

All TD memory is reached through KVM (ioctls, KVM_RUN) and the VMM's own address space. Two
memory modes:

- ``gmem`` (default): private memory lives in guest_memfd files the host cannot read, write or
  map; a host attempt to read private memory is refused (EINVAL from read(2) on the
  guest_memfd) and nothing breaks.
- ``legacy``: the pre-RFC world: private memory is also mapped in host userspace. A host read
  of a TD-owned line returns zeros; a host write clears the line's owner bit, so the TD's next
  read is poisoned and the TD dies; the host consuming that poison is a host machine check.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE
from host.kvm.errors import KvmError
from host.kvm.gmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, GuestMemfd
from host.kvm.kvm import Kvm
from host.kvm.memslots import KVM_MEM_GUEST_MEMFD, Memslot
from host.kvm.pagealloc import PAGE
from host.kvm.uapi import GuestOp, MachineCheck, TdParams, TdxError, VcpuRun
from host.kvm.usermem import AddressSpace
from host.kvm.vm import KVM_X86_TDX_VM, TDX_MAP_GPA_MAX_LEN, ExitKind, GpaRun, KvmExit, KvmVm
from host.qe.enclave import QuoteRefused, TdQuotingEnclave
from host.vmm.cancel import DEADLINE_EXCEEDED, NEVER, Cancellation
from host.vmm.errors import HostCrashed, Refusal, VmmError
from host.vmm.events import Event, EventBus, EventKind
from host.vmm.physical import LINE, MAC_BYTES, MAX_PHYSICAL_ACCESS, Dram, PhysicalPath, PhysicalRead
from wire.tdx_abi import GET_QUOTE_HEADER, GET_QUOTE_VERSION, GetQuoteStatus, TdVmCallStatus

PAGE_SHIFT = 12
#: A MapGPA with more than this left is answered in runs of consecutive pieces (see :meth:`Vmm.run_vcpu`).
MAP_GPA_RUN_FROM = 1 << 30
#: The longest run of MapGPA pieces answered at once.
MAP_GPA_RUN_MAX = 1 << 40
#: Mapped pages one run may zap at most (a run is halved until it holds no more), so that cancellation
#: checks come between bounded amounts of work however much of the TD is populated.
MAP_GPA_RUN_PAGES = 8192
#: How often a request waiting for a TD's lock looks at its own deadline, in seconds.
LOCK_POLL = 0.05
#: Mapped pages one GPA-map request visits at most (then it answers with where to continue).
GPA_MAP_PAGES = 65536


@dataclass(frozen=True)
class TdStatus:
    td_id: int
    name: str
    hkid: int
    lifecycle: str
    op_state: str
    dead: str
    private_pages: int
    attributes: int
    conversions: int


@dataclass(frozen=True)
class HostStats:
    memory_mode: str
    integrity: bool
    tds: int
    keyids_total: int
    keyids_free: int
    phys_pages_total: int
    phys_pages_free: int
    private_pages: int
    poisoned_lines: int
    exits: int
    conversions: int


@dataclass(frozen=True)
class GpaMap:
    """A piece of a TD's GPA map (:meth:`Vmm.gpa_map`)."""

    runs: list[GpaRun]
    memslots: list[Memslot]
    #: Where to ask again from, or None when the map reached the end of the last memslot.
    next_gpa: int | None
    shared_bit: int


@dataclass
class TdHandle:
    td_id: int
    name: str
    vm: KvmVm
    #: Held by every request on this TD, for its whole length (one vCPU, one VMM thread for it).
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: guest_memfd fd numbers the VMM opened for this TD.
    fds: dict[int, GuestMemfd] = field(default_factory=dict)
    #: host userspace mappings the VMM made for memslots (slot → hva).
    user_maps: dict[int, int] = field(default_factory=dict)
    conversions: int = 0
    #: Bearer credential that binds a guest to this one TD.
    credential: str = field(default_factory=lambda: secrets.token_hex(32))
    #: A guest holds this TD's lifeline (Attach): when it lets go, the TD is destroyed.
    attached: bool = False
    #: Destroyers waiting for this TD: a request running on it stops at its next check, as QEMU kicks
    #: its vCPU threads out of KVM_RUN to shut a VM down.
    kicks: int = 0
    #: Torn down and out of the registry: a request that was waiting for the lock finds it gone.
    gone: bool = False


class Vmm:
    """The VMM. Locks, in the order they may be taken (never the reverse, never two TD locks at once):

    1. a TD's own lock (:attr:`TdHandle.lock`): every request on that TD holds it for its whole length,
       so a TD's requests run one at a time while other TDs' run beside them;
    2. the registry lock: the TD table, the id and fd counters, the host-crash flag and the conversion
       counter; held for a lookup or an update, never while waiting or working;
    3. the small locks of what TDs share below (KVM's HKID pool and page allocator, the host address
       space, the event bus, the module's tables, the memory controller), each held for one operation.

    Statistics and listings read each TD without its lock, so they answer while a TD works. Long requests
    take a :class:`~host.vmm.cancel.Cancellation` and stop between bounded chunks once their caller has
    gone (docs/conventions.md §6)."""

    def __init__(
        self,
        kvm: Kvm,
        mm: AddressSpace,
        events: EventBus,
        *,
        legacy: bool = False,
        quoting: TdQuotingEnclave | None = None,
        dram: Dram | None = None,
    ) -> None:
        self._kvm = kvm
        #: A physical attacker's probe on DRAM (an attack surface, host/vmm/physical.py), if there is one.
        self._dram = dram
        self._quoting = quoting
        self._mm = mm
        self.events = events
        self.legacy = legacy
        self._lock = threading.Lock()
        self._tds: dict[int, TdHandle] = {}
        self._next_td = 1
        self._next_fd = 10
        self.crashed = ""
        self.conversions = 0

    # ---- registry ------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.crashed:
            raise HostCrashed(self.crashed)

    def td(self, td_id: int) -> TdHandle:
        with self._lock:
            handle = self._tds.get(td_id)
        if handle is None:
            raise VmmError(Refusal.NOT_FOUND, "TD_NOT_FOUND", f"no TD with id {td_id}")
        return handle

    def tds(self) -> list[TdHandle]:
        with self._lock:
            return list(self._tds.values())

    @contextmanager
    def locked_td(self, td_id: int, cancel: Cancellation = NEVER) -> Iterator[TdHandle]:
        """TD ``td_id`` with its lock held; waiting for the lock ends with the caller's deadline."""
        handle = self.td(td_id)
        with self._holding(handle, cancel):
            yield handle

    @contextmanager
    def _holding(self, handle: TdHandle, cancel: Cancellation) -> Iterator[None]:
        self._check_alive()
        while not handle.lock.acquire(timeout=LOCK_POLL):
            if cancel():
                raise self._stopped(handle, cancel, "while it waited for the TD")
        try:
            if handle.gone:
                raise VmmError(Refusal.NOT_FOUND, "TD_NOT_FOUND", f"TD {handle.td_id} was destroyed")
            self._check_alive()
            yield
        finally:
            handle.lock.release()

    def _signal(self, handle: TdHandle, cancel: Cancellation) -> Callable[[], bool]:
        """What KVM sees as ``signal_pending`` for a request on this TD: its caller has gone, or a
        destroyer is waiting for the TD."""
        return lambda: handle.kicks > 0 or cancel()

    def _stopped(
        self, handle: TdHandle, cancel: Cancellation, where: str, gpa: int | None = None
    ) -> VmmError:
        """The refusal for a request that stopped early: its caller's deadline or cancellation, or the
        TD being destroyed under it."""
        reason = cancel.reason()
        if reason:
            what = "deadline passed" if reason == DEADLINE_EXCEEDED else "call was cancelled"
            return VmmError(
                Refusal[reason], reason, f"TD {handle.td_id}: the caller's {what} {where}", gpa=gpa
            )
        return VmmError(
            Refusal.NOT_FOUND, "TD_NOT_FOUND", f"TD {handle.td_id} is being destroyed ({where})", gpa=gpa
        )

    def td_statuses(self) -> list[TdStatus]:
        self._check_alive()
        out = []
        for handle in self.tds():
            vm = handle.vm
            try:
                lifecycle, op_state = vm.td_state()
            except TdxError:  # torn down between the snapshot and this read
                lifecycle, op_state = "", ""
            out.append(
                TdStatus(
                    handle.td_id,
                    handle.name,
                    vm.hkid,
                    lifecycle,
                    op_state,
                    vm.dead,
                    len(vm.private_map),
                    vm.params.attributes,
                    handle.conversions,
                )
            )
        return out

    def stats(self) -> HostStats:
        self._check_alive()
        kvm, tds = self._kvm, self.tds()
        return HostStats(
            memory_mode="legacy" if self.legacy else "gmem",
            integrity=kvm.integrity,
            tds=len(tds),
            keyids_total=kvm.keyids_total,
            keyids_free=kvm.keyids_free,
            phys_pages_total=kvm.pages.total,
            phys_pages_free=kvm.pages.free_pages,
            private_pages=sum(len(h.vm.private_map) for h in tds),
            poisoned_lines=kvm.poisoned_lines(),
            exits=sum(h.vm.exits for h in tds),
            conversions=self.conversions,
        )

    def td_of_credential(self, credential: str) -> int | None:
        """The live TD a credential is bound to, or None."""
        if not credential:
            return None
        owner = next((h for h in self.tds() if hmac.compare_digest(h.credential, credential)), None)
        return None if owner is None else owner.td_id

    def authenticate(self, td_id: int, credential: str) -> None:
        """The caller speaks for TD ``td_id`` only with that TD's credential."""
        self._check_alive()
        if not credential:
            raise VmmError(
                Refusal.UNAUTHENTICATED, "MISSING_CREDENTIAL", "no TD credential (authorization: Bearer …)"
            )
        owner = self.td_of_credential(credential)
        if owner is None:
            raise VmmError(
                Refusal.UNAUTHENTICATED, "UNKNOWN_CREDENTIAL", "the credential belongs to no live TD"
            )
        if owner != td_id:
            raise VmmError(
                Refusal.PERMISSION_DENIED,
                "CREDENTIAL_FOR_ANOTHER_TD",
                f"the credential is bound to TD {owner}, not TD {td_id}",
            )

    @property
    def kvm(self) -> Kvm:
        return self._kvm

    # ---- TD lifecycle ----------------------------------------------------------------------
    def create_td(self, params: TdParams, memory_bytes: int = 0, name: str = "") -> TdHandle:
        handle = self._build_td(params, memory_bytes, name)
        self._register(handle)
        return handle

    def _build_td(self, params: TdParams, memory_bytes: int, name: str) -> TdHandle:
        """A new TD with its memory set up, not yet in the registry (nobody else can reach it)."""
        self._check_alive()
        if memory_bytes % PAGE or memory_bytes < 0:
            raise VmmError(Refusal.INVALID_ARGUMENT, "UNALIGNED", "memory_bytes must be a multiple of 4096")
        if memory_bytes > (1 << (params.gpaw - 1)):
            raise VmmError(Refusal.OUT_OF_RANGE, "BEYOND_GPAW", "memory_bytes exceeds the private GPA space")
        vm = self._kvm.create_vm(KVM_X86_TDX_VM)
        self._kvm.tdx_init_vm(vm, params)
        with self._lock:
            td_id = self._next_td
            self._next_td += 1
        handle = TdHandle(td_id, name or f"td{td_id}", vm)
        try:
            if memory_bytes:
                fd = self._create_guest_memfd(handle, memory_bytes, 0) if not self.legacy else -1
                flags = 0 if self.legacy else KVM_MEM_GUEST_MEMFD
                self._set_user_memory_region(handle, 0, flags, 0, memory_bytes, 0, fd, 0)
                # Like QEMU for a confidential guest: RAM starts private.
                vm.set_memory_attributes(0, memory_bytes, KVM_MEMORY_ATTRIBUTE_PRIVATE, 0)
        except BaseException:
            self._teardown(handle, NEVER)
            raise
        return handle

    def _register(self, handle: TdHandle) -> None:
        with self._lock:
            self._tds[handle.td_id] = handle
        self.events.publish(Event(EventKind.TD_CREATED, handle.td_id, detail=f"hkid {handle.vm.hkid}"))

    def launch_td(
        self, params: TdParams, memory_bytes: int, payload: Sequence[tuple[int, bytes, bool]], name: str = ""
    ) -> tuple[TdHandle, int]:
        """Measured launch: create, ADD (+EXTEND) every payload page, finalize. Returns the TD and
        the number of pages added. On any failure the half-built TD is torn down; it enters the
        registry only once it is finalized."""
        if memory_bytes <= 0:
            raise VmmError(Refusal.INVALID_ARGUMENT, "NO_MEMORY", "a launched TD needs memory_bytes > 0")
        handle = self._build_td(params, memory_bytes, name)
        try:
            pages = 0
            for gpa, data, measure in payload:
                if not data:
                    raise VmmError(
                        Refusal.INVALID_ARGUMENT, "EMPTY_PAYLOAD", f"payload at 0x{gpa:x} is empty"
                    )
                padded = bytes(data) + bytes(-len(data) % PAGE)
                pages += handle.vm.tdx_init_mem_region(gpa, padded, 1 if measure else 0)
            handle.vm.tdx_finalize_vm()
        except BaseException:
            self._teardown(handle, NEVER)
            raise
        self._register(handle)
        self.events.publish(Event(EventKind.TD_FINALIZED, handle.td_id))
        return handle, pages

    def init_mem_region(self, td_id: int, gpa: int, source: bytes, measure: bool) -> int:
        with self.locked_td(td_id) as handle:
            return handle.vm.tdx_init_mem_region(gpa, source, 1 if measure else 0)

    def finalize(self, td_id: int) -> None:
        with self.locked_td(td_id) as handle:
            handle.vm.tdx_finalize_vm()
        self.events.publish(Event(EventKind.TD_FINALIZED, td_id))

    def exists(self, td_id: int) -> bool:
        with self._lock:
            return td_id in self._tds

    def attach(self, td_id: int, credential: str) -> None:
        """Take the TD's lifeline; there is one per TD."""
        self.authenticate(td_id, credential)
        handle = self.td(td_id)
        with self._lock:
            if handle.attached:
                raise VmmError(
                    Refusal.ALREADY_EXISTS, "LIFELINE_HELD", f"a guest already holds TD {td_id}'s lifeline"
                )
            handle.attached = True

    def detach(self, td_id: int) -> None:
        """The guest holding this TD's lifeline went away: tear the TD down, as a VMM does when
        its guest's process dies."""
        try:
            self.destroy_td(td_id, why="guest detached")
        except VmmError as err:
            if err.reason != "TD_NOT_FOUND":
                raise

    def destroy_td(self, td_id: int, why: str = "destroyed", cancel: Cancellation = NEVER) -> tuple[int, int]:
        """Tear the TD down (docs/memory-model.md §6.5). A request running on it is asked to stop first.
        Teardown stops between chunks of pages once ``cancel`` says so (DEADLINE_EXCEEDED or CANCELLED);
        the TD stays in the table, dead, and the next destroy_td resumes it."""
        handle = self.td(td_id)
        with self._lock:
            handle.kicks += 1
        try:
            with self._holding(handle, cancel):
                hkid = handle.vm.hkid
                reclaimed = self._teardown(handle, cancel)
                with self._lock:
                    handle.gone = True
                    self._tds.pop(td_id, None)
        finally:
            with self._lock:
                handle.kicks -= 1
        self.events.publish(
            Event(EventKind.TD_DESTROYED, td_id, detail=f"{why}: {reclaimed} pages reclaimed")
        )
        return reclaimed, hkid

    def _teardown(self, handle: TdHandle, cancel: Cancellation) -> int:
        """KVM's teardown of the VM, then the VMM's mappings. Caller holds the TD's lock (or owns the
        handle alone)."""
        try:
            reclaimed = handle.vm.destroy(cancel)
        except KvmError as err:
            if err.errno == "EINTR":
                raise self._stopped(handle, cancel, "during teardown") from err
            raise
        for slot in list(handle.user_maps):
            self._mm.munmap(handle.user_maps.pop(slot))
        return reclaimed

    # ---- guest_memfd / memslots / attributes --------------------------------------------
    def create_guest_memfd(self, td_id: int, size: int, flags: int) -> int:
        with self.locked_td(td_id) as handle:
            return self._create_guest_memfd(handle, size, flags)

    def _create_guest_memfd(self, handle: TdHandle, size: int, flags: int) -> int:
        GuestMemfd.check_create(size, flags)
        with self._lock:
            fd = self._next_fd
            self._next_fd += 1
        handle.fds[fd] = handle.vm.create_guest_memfd(fd, size, flags)
        return fd

    def _gmem(self, handle: TdHandle, fd: int, *, any_td: bool = False) -> GuestMemfd:
        """The guest_memfd ``fd`` of this TD. fd numbers are per TD in this API; only binding
        (``any_td``) looks at other TDs' files (without their locks: only to let KVM refuse them
        with EINVAL, never to change them)."""
        gmem = handle.fds.get(fd)
        if gmem is None and any_td:
            gmem = next((other.fds.get(fd) for other in self.tds() if fd in other.fds), None)
        if gmem is None:
            raise KvmError("EBADF", f"fd {fd} is not an open guest_memfd of TD {handle.td_id}")
        return gmem

    def close_guest_memfd(self, td_id: int, fd: int) -> None:
        with self.locked_td(td_id) as handle:
            handle.vm.close_guest_memfd(self._gmem(handle, fd))
            del handle.fds[fd]

    def set_user_memory_region(
        self, td_id: int, slot: int, flags: int, gpa: int, size: int, hva: int, fd: int, offset: int
    ) -> int:
        with self.locked_td(td_id) as handle:
            return self._set_user_memory_region(handle, slot, flags, gpa, size, hva, fd, offset)

    def _set_user_memory_region(
        self, handle: TdHandle, slot: int, flags: int, gpa: int, size: int, hva: int, fd: int, offset: int
    ) -> int:
        gmem = self._gmem(handle, fd, any_td=True) if flags & KVM_MEM_GUEST_MEMFD else None
        made = 0
        if size and not hva:
            made = hva = self._mm.mmap(size)
        try:
            handle.vm.set_user_memory_region2(slot, flags, gpa, size, hva, gmem, offset)
        except BaseException:
            if made:
                self._mm.munmap(made)
            raise
        if size == 0 and slot in handle.user_maps:
            self._mm.munmap(handle.user_maps.pop(slot))
        if made:
            handle.user_maps[slot] = made
        return hva

    def set_memory_attributes(
        self, td_id: int, address: int, size: int, attributes: int, flags: int, cancel: Cancellation = NEVER
    ) -> None:
        """KVM_SET_MEMORY_ATTRIBUTES: one range, costing what is mapped in it (docs/memory-model.md §1.5)."""
        with self.locked_td(td_id, cancel) as handle:
            handle.vm.set_memory_attributes(address, size, attributes, flags)

    def fallocate(
        self, td_id: int, fd: int, mode: int, offset: int, length: int, cancel: Cancellation = NEVER
    ) -> None:
        """fallocate(2) on one of the TD's guest_memfds (docs/memory-model.md §1.3): an allocation free
        memory cannot hold is refused at once (ENOMEM); a long one stops between chunks once ``cancel``
        says so, keeping the pages it allocated."""
        with self.locked_td(td_id, cancel) as handle:
            try:
                gmem = self._gmem(handle, fd)
                handle.vm.fallocate(gmem, mode, offset, length, self._signal(handle, cancel))
            except KvmError as err:
                if err.errno == "EINTR":
                    raise self._stopped(handle, cancel, "during fallocate") from err
                raise

    # ---- conversion (QEMU kvm_convert_memory) ---------------------------------------------
    def convert(self, handle: TdHandle, gpa: int, size: int, to_private: bool) -> None:
        """Set the attributes, then discard the backing no longer used: its contents are lost. Costs the
        ranges and the populated pages of [gpa, gpa + size), not its length (docs/memory-model.md §1.5, §2).
        Caller holds the TD's lock."""
        vm = handle.vm
        vm.set_memory_attributes(gpa, size, KVM_MEMORY_ATTRIBUTE_PRIVATE if to_private else 0, 0)
        start, end = gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT
        for slot in list(vm.memslots.slots.values()):
            lo, hi = max(start, slot.base_gfn), min(end, slot.end_gfn)
            if lo >= hi:
                continue
            if to_private and not self.legacy and self._mm.contains(slot.hva(lo), (hi - lo) * PAGE):
                self._mm.madvise_dontneed(slot.hva(lo), (hi - lo) * PAGE)
            elif not to_private and slot.guest_memfd >= 0 and slot.guest_memfd in vm.gmems:
                vm.fallocate(
                    vm.gmems[slot.guest_memfd],
                    FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                    slot.gmem_index(lo) * PAGE,
                    (hi - lo) * PAGE,
                )
        handle.conversions += 1
        with self._lock:
            self.conversions += 1
        self.events.publish(
            Event(
                EventKind.CONVERSION,
                handle.td_id,
                gpa,
                size,
                detail="to private" if to_private else "to shared",
            )
        )

    # ---- vCPU loop ---------------------------------------------------------------------
    def run_vcpu(self, td_id: int, ops: list[GuestOp], cancel: Cancellation = NEVER) -> list[object]:
        """Run guest instructions to completion, handling every exit as QEMU's vCPU thread does.

        Between exits (at least every bounded chunk of guest work, host/tdx/module.py) KVM checks
        ``cancel``: once the caller has gone, the run ends with DEADLINE_EXCEEDED or CANCELLED, what was
        done staying done; a MapGPA in progress ends as if it had returned RETRY, and the refusal's
        ``gpa`` is its R11, the GPA to resume at (docs/memory-model.md §2).

        MapGPA pieces (≤ 2 MiB each) are answered one exit at a time, as QEMU does, while at most
        :data:`MAP_GPA_RUN_FROM` bytes of the TDVMCALL remain; beyond that the VMM answers runs of up to
        :data:`MAP_GPA_RUN_MAX` bytes of consecutive backed pieces at once (one KIND_MAP_GPA and one
        KIND_CONVERSION event per run), which KVM accounts piece by piece, so that the cost follows the
        ranges and the populated pages, not the size."""
        with self.locked_td(td_id, cancel) as handle:
            signal = self._signal(handle, cancel)
            run = VcpuRun(ops)
            vm = handle.vm
            last_fault: tuple[int, int] | None = None
            while True:
                try:
                    exit_ = vm.vcpu_run(run, signal)
                except MachineCheck as mc:  # pragma: no cover - the module turns TD #MC into exits
                    raise self._host_crash(mc) from mc
                if exit_.kind is ExitKind.DONE:
                    return run.results
                if exit_.kind is ExitKind.INTR:
                    raise self._stopped(handle, cancel, "during the run", gpa=exit_.gpa or None)
                if exit_.kind is ExitKind.MEMORY_FAULT:
                    self.events.publish(
                        Event(EventKind.MEMORY_FAULT, td_id, exit_.gpa, exit_.size, exit_.flags)
                    )
                    if exit_.detail:
                        raise VmmError(
                            Refusal.FAILED_PRECONDITION,
                            "MEMORY_FAULT",
                            exit_.detail,
                            errno="EFAULT",
                            gpa=exit_.gpa,
                        )
                    if last_fault == (exit_.gpa, exit_.flags):  # converting did not help: never spin
                        raise VmmError(
                            Refusal.FAILED_PRECONDITION,
                            "MEMORY_FAULT",
                            f"0x{exit_.gpa:x} faults again after its conversion: nothing backs it",
                            errno="EFAULT",
                            gpa=exit_.gpa,
                        )
                    last_fault = (exit_.gpa, exit_.flags)
                    # Implicit conversion request: convert the page to what the guest accessed.
                    self.convert(
                        handle, exit_.gpa, exit_.size, bool(exit_.flags & KVM_MEMORY_ATTRIBUTE_PRIVATE)
                    )
                elif exit_.kind is ExitKind.HYPERCALL:
                    length = self._map_gpa_run(vm, exit_)
                    self.events.publish(Event(EventKind.MAP_GPA, td_id, exit_.gpa, length, exit_.flags))
                    ret = 0
                    try:
                        if self._backed(vm, exit_.gpa, length) < length:
                            raise KvmError("EINVAL", "MapGPA of memory no memslot backs")  # as QEMU refuses
                        self.convert(handle, exit_.gpa, length, bool(exit_.flags))
                    except (KvmError, TdxError):
                        ret = 22  # -EINVAL to the guest as INVALID_OPERAND
                    vm.complete_hypercall(ret, length)
                elif exit_.kind is ExitKind.TDX_GET_QUOTE:
                    vm.complete_get_quote(self._get_quote(handle, exit_.gpa, exit_.size))
                elif exit_.kind is ExitKind.INTERNAL_ERROR:
                    self.events.publish(Event(EventKind.POISON, td_id, detail=exit_.detail))
                    self.events.publish(Event(EventKind.TD_DEAD, td_id, detail=exit_.detail))
                    raise VmmError(
                        Refusal.DATA_LOSS,
                        "TD_MACHINE_CHECK",
                        f"TD is dead: {exit_.detail}",
                        tdx_status=exit_.status,
                    )
                elif exit_.kind is ExitKind.GUEST_VE:
                    raise VmmError(
                        Refusal.FAILED_PRECONDITION, "VE_PENDING_PAGE", exit_.detail, gpa=exit_.gpa
                    )
                else:
                    raise VmmError(
                        Refusal.INVALID_ARGUMENT,
                        "TDCALL_ERROR",
                        exit_.detail,
                        tdx_status=exit_.status,
                        gpa=exit_.gpa,
                    )

    @staticmethod
    def _backed(vm: KvmVm, gpa: int, size: int) -> int:
        """How many bytes from ``gpa`` (at most ``size``) lie inside consecutive memslots (guest RAM)."""
        pos, end = gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT
        while pos < end:
            slot = vm.memslots.find(pos)
            if slot is None:
                break
            pos = slot.end_gfn
        return min(size, (pos << PAGE_SHIFT) - gpa)

    def _map_gpa_run(self, vm: KvmVm, exit_: KvmExit) -> int:
        """How much of a MapGPA to answer for this exit: its piece, or a run of whole backed pieces when
        more than :data:`MAP_GPA_RUN_FROM` bytes remain (up to the exit's span and :data:`MAP_GPA_RUN_MAX`,
        holding at most :data:`MAP_GPA_RUN_PAGES` mapped pages)."""
        if exit_.span <= MAP_GPA_RUN_FROM:
            return exit_.size
        length = self._backed(vm, exit_.gpa, min(exit_.span, MAP_GPA_RUN_MAX))
        start = exit_.gpa >> PAGE_SHIFT
        while length > exit_.size:
            end = start + (length >> PAGE_SHIFT)
            if vm.private_map.count_in(start, end) + vm.shared_ept.count_in(start, end) <= MAP_GPA_RUN_PAGES:
                break
            length //= 2
        if length < exit_.span:
            length -= length % TDX_MAP_GPA_MAX_LEN
        return max(length, exit_.size)

    # ---- GetQuote (QEMU tdx_handle_get_quote + the quote generation service) ---------------
    def _get_quote(self, handle: TdHandle, gpa: int, size: int) -> int:
        """Serve one GHCI GetQuote buffer in shared memory; returns the TDVMCALL status. The quote
        (or an error status) goes back into the buffer, as a real VMM does once QGS answers."""
        try:
            # The whole buffer must be shared guest memory the VMM can reach (QEMU checks it too).
            self._host_view(handle, gpa, size)
            version, _, in_len, _ = GET_QUOTE_HEADER.unpack(
                self._host_read(handle, gpa, GET_QUOTE_HEADER.size)
            )
            room = size - GET_QUOTE_HEADER.size
            if version != GET_QUOTE_VERSION or not 0 < in_len <= room:
                return int(TdVmCallStatus.INVALID_OPERAND)
            report = self._host_read(handle, gpa + GET_QUOTE_HEADER.size, in_len)
            status, quote = GetQuoteStatus.QGS_UNAVAILABLE, b""
            if self._quoting is not None:
                try:
                    quote = self._quoting.get_quote(report)
                    status = GetQuoteStatus.SUCCESS if len(quote) <= room else GetQuoteStatus.ERROR
                except QuoteRefused as refused:
                    status = (
                        GetQuoteStatus.QGS_UNAVAILABLE
                        if refused.reason == "QGS_UNAVAILABLE"
                        else GetQuoteStatus.ERROR
                    )
            header = GET_QUOTE_HEADER.pack(GET_QUOTE_VERSION, status, in_len, len(quote))
            self._host_write(handle, gpa, header + (quote if status == GetQuoteStatus.SUCCESS else b""))
        except VmmError:
            return int(TdVmCallStatus.INVALID_OPERAND)
        return int(TdVmCallStatus.SUCCESS)

    # ---- host userspace touching guest memory -----------------------------------------
    def _host_view(self, handle: TdHandle, gpa: int, length: int) -> int:
        """The host virtual address of [gpa, gpa + length), or refuse for private memory."""
        vm = handle.vm
        if length <= 0:
            raise VmmError(Refusal.INVALID_ARGUMENT, "EMPTY", "length must be positive")
        start, end = gpa >> PAGE_SHIFT, (gpa + length - 1 >> PAGE_SHIFT) + 1
        slot = vm.memslots.find(start)
        if slot is None or end > slot.end_gfn:
            raise VmmError(
                Refusal.OUT_OF_RANGE, "NO_MEMSLOT", f"0x{gpa:x}+{length} is not inside one memslot"
            )
        private = not vm.attributes.uniform(start, end, 0)
        if private and not self.legacy:
            self.events.publish(Event(EventKind.HOST_ACCESS_REFUSED, handle.td_id, gpa, length))
            gmem = vm.gmems.get(slot.guest_memfd)
            try:
                if gmem is None:
                    raise KvmError("EINVAL", "private memory has no host mapping")
                gmem.read()
            except KvmError as err:
                raise VmmError(
                    Refusal.PERMISSION_DENIED,
                    "PRIVATE_MEMORY_NOT_ACCESSIBLE",
                    f"0x{gpa:x} is TD-private: guest_memfd cannot be read by the host ({err})",
                    errno=err.errno,
                    gpa=gpa,
                ) from err
        return slot.hva(start) + gpa % PAGE

    def host_read(self, td_id: int, gpa: int, length: int) -> bytes:
        with self.locked_td(td_id) as handle:
            return self._host_read(handle, gpa, length)

    def _host_read(self, handle: TdHandle, gpa: int, length: int) -> bytes:
        hva = self._host_view(handle, gpa, length)
        try:
            return self._mm.read(hva, length)
        except MachineCheck as mc:
            raise self._host_crash(mc) from mc

    def host_write(self, td_id: int, gpa: int, data: bytes) -> None:
        with self.locked_td(td_id) as handle:
            self._host_write(handle, gpa, data)

    def _host_write(self, handle: TdHandle, gpa: int, data: bytes) -> None:
        hva = self._host_view(handle, gpa, len(data))
        try:
            self._mm.write(hva, data)
        except MachineCheck as mc:
            raise self._host_crash(mc) from mc

    # ---- attack surfaces, not VMM features (docs/memory-model.md §1.2, §7.2) ------------------------
    def guest_memfd_file_op(self, td_id: int, fd: int, op: str) -> None:
        """Host userspace's read(2), write(2), mmap(2) or ftruncate(2) on one of the TD's guest_memfds:
        Linux refuses each one with its errno (EINVAL, EINVAL, ENODEV, EINVAL)."""
        with self.locked_td(td_id) as handle:
            gmem = self._gmem(handle, fd)
            attempt = {"read": gmem.read, "write": gmem.write, "mmap": gmem.mmap, "ftruncate": gmem.truncate}
            try:
                attempt[op]()
            except KvmError as err:
                detail = f"{op}(2) on guest_memfd {fd}: {err.errno}"
                self.events.publish(Event(EventKind.HOST_ACCESS_REFUSED, td_id, detail=detail))
                raise

    def gpa_map(self, td_id: int, start_gpa: int, max_runs: int) -> GpaMap:
        """The TD's GPA space from ``start_gpa`` in runs (docs/memory-model.md §1.7): at most ``max_runs``
        runs and :data:`GPA_MAP_PAGES` mapped pages per call; ``next_gpa`` says where to continue."""
        with self.locked_td(td_id) as handle:
            vm = handle.vm
            if start_gpa & vm.shared_bit or start_gpa % PAGE:
                raise VmmError(
                    Refusal.INVALID_ARGUMENT, "UNALIGNED", "start_gpa must be a page-aligned private GPA"
                )
            runs, next_gfn = vm.gpa_map(start_gpa >> PAGE_SHIFT, max_runs, GPA_MAP_PAGES)
            slots = sorted(vm.memslots.slots.values(), key=lambda slot: slot.base_gfn)
            next_gpa = None if next_gfn is None else next_gfn << PAGE_SHIFT
            return GpaMap(runs, slots, next_gpa, vm.shared_bit)

    def physical_read(
        self, path: PhysicalPath, length: int, *, pa: int = 0, td_gpa: tuple[int, int] | None = None
    ) -> PhysicalRead:
        """What a physical attacker reads at ``pa`` or in the frame behind a TD GPA (host/vmm/physical.py)."""
        self._check_alive()
        self._check_lines("length", length, MAX_PHYSICAL_ACCESS)
        if td_gpa is None:
            self._check_physical(pa, length)
            return PhysicalRead(pa, *self._physical_load(path, pa, length))
        with self.locked_td(td_gpa[0]) as handle:
            frame, private = self._frame(handle, td_gpa[1], length)
            return PhysicalRead(frame, *self._physical_load(path, frame, length), private=private)

    def physical_write(
        self,
        path: PhysicalPath,
        data: bytes,
        macs: bytes = b"",
        *,
        pa: int = 0,
        td_gpa: tuple[int, int] | None = None,
    ) -> int:
        """A physical attacker's (or the host kernel's) store at ``pa`` or at the frame backing a TD's GPA;
        returns the physical address written."""
        self._check_alive()
        self._check_lines("data", len(data), MAX_PHYSICAL_ACCESS)
        if macs:
            if path is not PhysicalPath.DRAM:
                raise VmmError(
                    Refusal.INVALID_ARGUMENT, "MACS_NEED_DRAM", "MACs can only be written into DRAM directly"
                )
            if self._dram is not None and not self._dram.integrity:
                raise VmmError(
                    Refusal.FAILED_PRECONDITION, "NO_INTEGRITY", "this machine keeps no MACs (Li mode)"
                )
            lines = len(data) // LINE
            if len(macs) != lines * MAC_BYTES:
                raise VmmError(
                    Refusal.INVALID_ARGUMENT,
                    "MACS_LENGTH",
                    f"{lines} lines take {lines * MAC_BYTES} bytes of MAC, not {len(macs)}",
                )
        if td_gpa is None:
            self._check_physical(pa, len(data))
            self._physical_store(path, pa, data, macs)
            return pa
        with self.locked_td(td_gpa[0]) as handle:
            frame, _ = self._frame(handle, td_gpa[1], len(data))
            self._physical_store(path, frame, data, macs)
            return frame

    @staticmethod
    def _check_lines(name: str, length: int, limit: int) -> None:
        if length <= 0 or length % LINE:
            raise VmmError(
                Refusal.INVALID_ARGUMENT,
                "UNALIGNED",
                f"{name} must be whole 64-byte lines, not {length} bytes",
            )
        if length > limit:
            raise VmmError(
                Refusal.INVALID_ARGUMENT, "TOO_LARGE", f"{name} of {length} bytes exceeds {limit} per request"
            )

    def _check_physical(self, pa: int, length: int) -> None:
        if pa % LINE:
            raise VmmError(Refusal.INVALID_ARGUMENT, "UNALIGNED", f"pa 0x{pa:x} is not 64-byte aligned")
        if pa + length > self._kvm.phys_bytes:
            raise VmmError(
                Refusal.OUT_OF_RANGE,
                "BEYOND_PHYSICAL_MEMORY",
                f"[0x{pa:x}, 0x{pa + length:x}) is outside the machine's 0x{self._kvm.phys_bytes:x} bytes",
            )

    def _frame(self, handle: TdHandle, gpa: int, length: int) -> tuple[int, bool]:
        """(address of ``gpa``'s byte in the frame backing it now, private?). Caller holds the TD's lock."""
        gpa &= ~handle.vm.shared_bit
        if gpa % LINE:
            raise VmmError(Refusal.INVALID_ARGUMENT, "UNALIGNED", f"gpa 0x{gpa:x} is not 64-byte aligned")
        if gpa % PAGE + length > PAGE:
            raise VmmError(
                Refusal.OUT_OF_RANGE, "CROSSES_PAGE", f"0x{gpa:x}+{length} leaves the 4 KiB page of its GPA"
            )
        found = handle.vm.frame_of(gpa >> PAGE_SHIFT)
        if found is None:
            raise VmmError(
                Refusal.FAILED_PRECONDITION,
                "NO_FRAME",
                f"no frame backs GPA 0x{gpa:x} of TD {handle.td_id} (never touched, or in no memslot)",
                gpa=gpa,
            )
        return found[0] + gpa % PAGE, found[1]

    def _physical_load(self, path: PhysicalPath, pa: int, length: int) -> tuple[bytes, bytes]:
        if path is PhysicalPath.DRAM:
            return self._probe().read(pa, length)
        try:
            return self._kvm.kernel_read(pa, length), b""
        except MachineCheck as mc:
            raise self._host_crash(mc) from mc

    def _physical_store(self, path: PhysicalPath, pa: int, data: bytes, macs: bytes) -> None:
        if path is PhysicalPath.DRAM:
            self._probe().write(pa, data, macs)
            return
        try:
            self._kvm.kernel_write(pa, data)
        except MachineCheck as mc:
            raise self._host_crash(mc) from mc

    def _probe(self) -> Dram:
        if self._dram is None:
            raise VmmError(Refusal.FAILED_PRECONDITION, "NO_DRAM_PROBE", "this machine has no DRAM probe")
        return self._dram

    def _host_crash(self, mc: MachineCheck) -> HostCrashed:
        """Poison consumed outside SEAM: the machine is gone, and every TD with it."""
        crashed = f"host machine check: consumed poisoned memory at PA 0x{mc.pa:x}"
        with self._lock:
            self.crashed = crashed
            handles = list(self._tds.values())
        for handle in handles:
            handle.vm.dead = crashed
            self.events.publish(Event(EventKind.TD_DEAD, handle.td_id, detail=crashed))
        self.events.publish(Event(EventKind.HOST_CRASH, detail=crashed))
        return HostCrashed(crashed)
