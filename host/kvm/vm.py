"""A KVM VM of type KVM_X86_TDX_VM: its ioctls, the TDX fault/zap paths and KVM_RUN
(docs/memory-model.md §1, §2, §5, §6; Linux ``arch/x86/kvm/vmx/tdx.c``, ``kvm_main.c``).

Every TDX-module interaction is a SEAMCALL leaf on :class:`~host.tdx.module.TdxModule`;
KVM keeps its own mirror of what it mapped (``private_map``/``shared_ept``) as the TDP MMU
does, and never sees a TD key or TD plaintext: a :class:`~host.tdx.vcpu.VcpuRun` is passed to
TDH.VP.ENTER without being read.

Costs follow what exists, not the size of a range: the mirrors and a guest_memfd's pages are
:class:`~host.kvm.pagemap.PageMap` s, attributes are ranges (host/kvm/attributes.py), so a conversion,
zap or hole punch over terabytes visits only the populated pages. Long operations stop between bounded
chunks when a signal is pending for the calling thread (``signal_pending``, the caller's view of
``signal_pending(current)``): KVM_RUN with KVM_EXIT_INTR, fallocate and teardown with EINTR
(docs/memory-model.md §1.3, §2, §6.5).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace

from host.kvm.attributes import KVM_MEMORY_ATTRIBUTE_PRIVATE, AttributeMap
from host.kvm.errors import KvmError, einval
from host.kvm.gmem import GuestMemfd
from host.kvm.memslots import (
    KVM_MEM_GUEST_MEMFD,
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    KVM_USER_MEM_SLOTS,
    VALID_FLAGS,
    Memslot,
    MemslotTable,
)
from host.kvm.pagealloc import CHUNK, PAGE, PageAllocator
from host.kvm.pagemap import PageMap
from host.kvm.usermem import AddressSpace
from host.tdx.hostbus import HostMemoryBus
from host.tdx.module import TdxModule
from host.tdx.sept import PENDING_STATES, SeptState
from host.tdx.status import TdxError
from host.tdx.tdcs import TdParams
from host.tdx.vcpu import ExitReason, TdExit, TdVmCallResult, VcpuRun
from wire.tdx_abi import TdVmCall, TdVmCallStatus, TdxStatus, is_error

KVM_X86_TDX_VM = 5
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_MEMORY_FAULT = 38
KVM_MEMORY_EXIT_FLAG_PRIVATE = 1 << 3
KVM_HC_MAP_GPA_RANGE = 12
KVM_MAP_GPA_RANGE_ENCRYPTED = 1 << 4
KVM_MAP_GPA_RANGE_DECRYPTED = 0
TDX_MAP_GPA_MAX_LEN = 2 << 20
KVM_TDX_MEASURE_MEMORY_REGION = 1 << 0
PAGE_SHIFT = 12


class ExitKind(enum.Enum):
    """Why KVM_RUN returned to userspace."""

    DONE = "done"  # the guest request completed (the simulator's "back to the guest" point)
    MEMORY_FAULT = "KVM_EXIT_MEMORY_FAULT"
    HYPERCALL = "KVM_EXIT_HYPERCALL"
    INTERNAL_ERROR = "KVM_EXIT_INTERNAL_ERROR"
    TDX_GET_QUOTE = "KVM_EXIT_TDX(GET_QUOTE)"
    #: KVM_RUN returned -EINTR: a signal is pending for the vCPU thread; nothing was entered since.
    INTR = "KVM_EXIT_INTR"
    GUEST_VE = "#VE"  # delivered to the guest; its request fails
    GUEST_ERROR = "TDCALL error"  # a TDCALL returned an error status to the guest


@dataclass(frozen=True)
class KvmExit:
    kind: ExitKind
    gpa: int = 0
    size: int = 0
    flags: int = 0
    status: int = 0
    detail: str = ""
    #: KVM_EXIT_HYPERCALL of MapGPA: the bytes from ``gpa`` one answer may cover (whole pieces up to
    #: the end of the TDVMCALL or the piece after which a RETRY is due); see :meth:`KvmVm.complete_hypercall`.
    span: int = 0


class GpaState(enum.Enum):
    """What backs one guest page, as KVM and the Secure-EPT show it (docs/memory-model.md §1.7)."""

    PRIVATE_ACCEPTED = "private accepted"  # S-EPT leaf MAPPED
    PRIVATE_PENDING = "private pending"  # S-EPT leaf PENDING: augmented, not accepted
    SHARED = "shared"  # a frame in host userspace
    UNBACKED = "unbacked"  # nothing mapped for the TD here yet
    POISONED = "poisoned"  # a machine check was consumed in the page's frame (HWPoison)


@dataclass(frozen=True)
class GpaRun:
    """``npages`` pages from ``gfn`` in one state, inside memslot ``slot``."""

    gfn: int
    npages: int
    state: GpaState
    private: bool
    slot: int
    guest_memfd: int = -1
    gmem_index: int = 0

    def follows(self, other: GpaRun) -> bool:
        """Whether this run continues ``other`` (same state, slot and file, adjacent pages and offsets)."""
        return (
            other.gfn + other.npages == self.gfn
            and (other.state, other.private, other.slot, other.guest_memfd)
            == (self.state, self.private, self.slot, self.guest_memfd)
            and (self.guest_memfd < 0 or other.gmem_index + other.npages == self.gmem_index)
        )


@dataclass(frozen=True)
class _RunMaker:
    """Runs of one attribute range of one memslot."""

    slot: Memslot
    private: bool
    guest_memfd: int

    def make(self, gfn: int, npages: int, state: GpaState) -> GpaRun:
        index = self.slot.gmem_index(gfn) if self.guest_memfd >= 0 else 0
        return GpaRun(gfn, npages, state, self.private, self.slot.slot, self.guest_memfd, index)


@dataclass
class _MapGpaProgress:
    next: int
    end: int
    shared: bool
    chunks: int = 0
    ret: int | None = None
    #: Bytes from ``next`` that userspace's answer covers.
    answered: int = 0


def _no_signal() -> bool:
    return False


class KvmVm:
    """One TDX VM. Its callers serialise the calls for one VM (the VMM's per-TD lock); what VMs share
    (the page allocator, the HKID pool, the module's tables, the host address space) locks itself."""

    def __init__(
        self,
        vm_id: int,
        module: TdxModule,
        pages: PageAllocator,
        mm: AddressSpace,
        bus: HostMemoryBus,
        hkid_free: Callable[[int], None],
        *,
        legacy: bool = False,
        map_gpa_retry_every: int = 0,
    ) -> None:
        self.vm_id = vm_id
        #: Simulated pending vCPU events: every Nth MapGPA chunk stops the TDVMCALL with RETRY
        #: (0 = never), as tdx_complete_vmcall_map_gpa does when kvm_vcpu_has_events().
        self.map_gpa_retry_every = map_gpa_retry_every
        self._module = module
        self._pages = pages
        self._mm = mm
        self._bus = bus
        #: TDR, TDCS and TDVPR pages KVM gave the module; freed after reclaim.
        self._control_pages: set[int] = set()
        self._hkid_free = hkid_free
        self.legacy = legacy
        self.hkid = -1
        self.tdr_pa = -1
        self.params = TdParams()
        self.finalized = False
        self.dead = ""
        self.memslots = MemslotTable()
        self.attributes = AttributeMap()
        self.gmems: dict[int, GuestMemfd] = {}
        #: KVM's mirror of the S-EPT leaves it installed: gfn → pa.
        self.private_map = PageMap()
        #: The shared EPT: gfn (shared bit stripped) → host pa.
        self.shared_ept = PageMap()
        self._map_gpa: _MapGpaProgress | None = None
        #: GetQuote exit handed to userspace, waiting for its ``ret``.
        self._get_quote_pending = False
        self._get_quote_ret: int | None = None
        self.exits = 0
        #: Frames (page addresses) where this VM's TD consumed poison: the kernel's machine-check handler
        #: marks them HWPoison (Linux ``memory_failure``); the memory map shows them.
        self.hwpoison: set[int] = set()
        #: Teardown progress, so that an interrupted teardown resumes where it stopped.
        self._keys_freed = False
        self._reclaimed = 0

    # ---- KVM_TDX_INIT_VM ----------------------------------------------------------------
    def tdx_init_vm(self, params: TdParams, hkid: int) -> None:
        if self.tdr_pa >= 0:
            raise KvmError("EINVAL", "KVM_TDX_INIT_VM was already done")
        try:
            params.check()
        except TdxError as err:
            raise KvmError("EINVAL", err.message, tdx_status=err.status) from err
        tdr = self._pages.alloc()
        tdcs, tdvpr = self._pages.alloc(), self._pages.alloc()
        self._control_pages.update((tdr, tdcs, tdvpr))
        try:
            self._module.tdh_mng_create(tdr, hkid)
        except TdxError as err:
            for pa in (tdr, tdcs, tdvpr):
                self._pages.free(pa)
            self._control_pages.clear()
            raise KvmError("EIO", err.message, tdx_status=err.status) from err
        self.tdr_pa, self.hkid = tdr, hkid
        self._module.tdh_mng_key_config(tdr)
        self._module.tdh_mng_addcx(tdr, tdcs)
        self._module.tdh_mng_init(tdr, params)
        self.params = params
        self._module.tdh_vp_create(tdr, tdvpr)

    @property
    def shared_bit(self) -> int:
        return self.params.shared_bit

    def td_state(self) -> tuple[str, str]:
        """(TDR lifecycle, TDCS OP_STATE) names, read from the module (TDH.MNG.RD of non-secret fields)."""
        if self.tdr_pa < 0:
            return "", ""
        td = self._module.td_summary(self.tdr_pa)
        return td.lifecycle.name, td.op_state.name

    # ---- guest_memfd and memslots -------------------------------------------------------
    def create_guest_memfd(self, fd: int, size: int, flags: int) -> GuestMemfd:
        GuestMemfd.check_create(size, flags)
        gmem = GuestMemfd(fd=fd, vm_id=self.vm_id, size=size, flags=flags)
        self.gmems[fd] = gmem
        return gmem

    def _own(self, gmem: GuestMemfd) -> None:
        if gmem.vm_id != self.vm_id or gmem.fd not in self.gmems:
            raise KvmError("EBADF", f"guest_memfd {gmem.fd} is not a file of VM {self.vm_id}")

    def close_guest_memfd(self, gmem: GuestMemfd) -> None:
        """Closing the file zaps every mapping of it; later faults exit with EFAULT."""
        self._own(gmem)
        for first, end, slot_id in list(gmem.bindings):
            slot = self.memslots.slots[slot_id]
            self._zap_private(slot.base_gfn + first - slot.gmem_first, slot.base_gfn + end - slot.gmem_first)
        self._free_gmem_pages(gmem, list(gmem.pages))
        gmem.closed = True
        del self.gmems[gmem.fd]

    def set_user_memory_region2(
        self,
        slot: int,
        flags: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
        guest_memfd: GuestMemfd | None,
        guest_memfd_offset: int,
    ) -> None:
        if flags & ~VALID_FLAGS:
            raise einval(f"unknown memslot flags 0x{flags:x}")
        if flags & KVM_MEM_GUEST_MEMFD and flags & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY):
            raise einval("KVM_MEM_GUEST_MEMFD cannot be combined with LOG_DIRTY_PAGES or READONLY")
        if not 0 <= slot < KVM_USER_MEM_SLOTS:
            raise einval(f"slot {slot} out of range")
        if memory_size % PAGE or guest_phys_addr % PAGE or userspace_addr % PAGE or guest_memfd_offset % PAGE:
            raise einval("memslot size, GPA, userspace address and guest_memfd offset must be page-aligned")
        if guest_phys_addr + memory_size > 1 << 52 or guest_phys_addr + memory_size < guest_phys_addr:
            raise einval("memslot GPA range overflows")
        old = self.memslots.slots.get(slot)
        if memory_size == 0:
            if old is None:
                raise einval(f"delete of nonexistent slot {slot}")
            self._delete_slot(old)
            return
        if old is not None:
            if old.flags & KVM_MEM_GUEST_MEMFD:
                raise einval("private memslots are immutable, they can only be deleted")
            if old.npages != memory_size // PAGE:
                raise einval("a memslot's size cannot change")
        base_gfn, npages = guest_phys_addr >> PAGE_SHIFT, memory_size >> PAGE_SHIFT
        other = self.memslots.overlaps(base_gfn, npages, ignore=slot)
        if other is not None:
            raise KvmError("EEXIST", f"GPA range overlaps memslot {other.slot}")
        fd = -1
        if flags & KVM_MEM_GUEST_MEMFD:
            if guest_memfd is None:
                raise KvmError("EBADF", "guest_memfd is not an open file")
            if guest_memfd.vm_id != self.vm_id:
                raise einval("guest_memfd belongs to another VM")
            if guest_memfd_offset + memory_size > guest_memfd.size:
                raise einval("guest_memfd_offset + memory_size is beyond the guest_memfd size")
            first = guest_memfd_offset // PAGE
            if guest_memfd.is_bound(first, first + npages):
                raise einval("guest_memfd range is already bound to another memslot")
            guest_memfd.bindings.append((first, first + npages, slot))
            fd = guest_memfd.fd
        if old is not None:
            self._delete_slot(old)
        self.memslots.slots[slot] = Memslot(
            slot, flags, base_gfn, npages, userspace_addr, fd, guest_memfd_offset // PAGE
        )

    def _delete_slot(self, slot: Memslot) -> None:
        """Deleting a TDX memslot zaps its mappings: their contents are lost."""
        self._zap_private(slot.base_gfn, slot.end_gfn)
        self._zap_shared(slot.base_gfn, slot.end_gfn)
        if slot.guest_memfd >= 0 and slot.guest_memfd in self.gmems:
            gmem = self.gmems[slot.guest_memfd]
            gmem.bindings = [b for b in gmem.bindings if b[2] != slot.slot]
        del self.memslots.slots[slot.slot]

    # ---- KVM_SET_MEMORY_ATTRIBUTES ------------------------------------------------------
    def set_memory_attributes(self, address: int, size: int, attributes: int, flags: int) -> bool:
        """Returns False when the whole range already had the value (a no-op)."""
        if flags:
            raise einval("flags must be 0")
        if attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE:
            raise einval(f"unsupported attributes 0x{attributes:x}")
        if size == 0 or address % PAGE or size % PAGE:
            raise einval("address and size must be page-aligned and size non-zero")
        if address + size > 1 << 52:
            raise einval("range overflows the GPA space")
        start, end = address >> PAGE_SHIFT, (address + size) >> PAGE_SHIFT
        if self.attributes.uniform(start, end, attributes):
            return False
        # Invalidate every mapping in the range, then store the new value.
        self._zap_private(start, end)
        self._zap_shared(start, end)
        self.attributes.set(start, end, attributes)
        return True

    # ---- fallocate on a guest_memfd -----------------------------------------------------
    def fallocate(
        self,
        gmem: GuestMemfd,
        mode: int,
        offset: int,
        length: int,
        signal_pending: Callable[[], bool] = _no_signal,
    ) -> None:
        """fallocate(2) on a guest_memfd of this VM (docs/memory-model.md §1.3): ALLOCATE refuses what free
        memory cannot hold at once and stops with EINTR between chunks; PUNCH_HOLE zaps and frees only
        the pages the file has."""
        self._own(gmem)

        def punch(indices: list[int]) -> None:
            for first, end, slot_id in gmem.bindings:
                slot = self.memslots.slots[slot_id]
                hit = [slot.base_gfn + i - slot.gmem_first for i in indices if first <= i < end]
                self._zap_private_gfns(hit)
            self._free_gmem_pages(gmem, indices)

        gmem.fallocate(mode, offset, length, self._pages, punch, signal_pending)

    def _free_gmem_pages(self, gmem: GuestMemfd, indices: list[int]) -> None:
        for i in range(0, len(indices), CHUNK):
            self._pages.free_many([gmem.pages.pop(index) for index in indices[i : i + CHUNK]])

    # ---- zap: BLOCK → TRACK → REMOVE (docs/memory-model.md §6.4) -----------------------------
    def _zap_private(self, start: int, end: int) -> None:
        self._zap_private_gfns(self.private_map.keys_in(start, end))

    def _zap_private_gfns(self, gfns: list[int]) -> None:
        gfns = [g for g in gfns if g in self.private_map]
        if not gfns:
            return
        if self.tdr_pa < 0 or self.dead:
            for gfn in gfns:
                self._release_private(gfn)
            return
        for gfn in gfns:
            self._module.tdh_mem_range_block(self.tdr_pa, gfn << PAGE_SHIFT)
        self._module.tdh_mem_track(self.tdr_pa)  # + kick every vCPU out of the old epoch
        for gfn in gfns:
            pa = self._module.tdh_mem_page_remove(self.tdr_pa, gfn << PAGE_SHIFT)
            self._module.tdh_phymem_page_wbinvd(pa)
            self._release_private(gfn)

    def _release_private(self, gfn: int) -> None:
        """The page goes back to its owner: the guest_memfd keeps it until PUNCH_HOLE; in
        legacy mode it stays in the VMM's userspace mapping."""
        del self.private_map[gfn]

    def _zap_shared(self, start: int, end: int) -> None:
        for gfn in self.shared_ept.keys_in(start, end):
            del self.shared_ept[gfn]

    # ---- KVM_TDX_INIT_MEM_REGION / KVM_TDX_FINALIZE_VM ----------------------------------
    def tdx_init_mem_region(self, gpa: int, source: bytes, flags: int) -> int:
        if self.finalized:
            raise einval("KVM_TDX_INIT_MEM_REGION after KVM_TDX_FINALIZE_VM")
        if flags & ~KVM_TDX_MEASURE_MEMORY_REGION:
            raise einval(f"unknown flags 0x{flags:x}")
        if gpa % PAGE or not source or len(source) % PAGE or gpa & self.shared_bit:
            raise einval("source and GPA must be page-aligned, non-empty and private")
        npages = len(source) // PAGE
        start = gpa >> PAGE_SHIFT
        if not self.attributes.uniform(start, start + npages, KVM_MEMORY_ATTRIBUTE_PRIVATE):
            raise einval("KVM_TDX_INIT_MEM_REGION range must be PRIVATE")
        view = memoryview(source)
        for i in range(npages):
            gfn = start + i
            pa = self._private_pfn(gfn)
            if isinstance(pa, KvmExit):
                raise KvmError("EFAULT", pa.detail or f"no private backing for gpa 0x{gfn << PAGE_SHIFT:x}")
            try:
                self._module.tdh_mem_page_add(
                    self.tdr_pa, gfn << PAGE_SHIFT, pa, bytes(view[i * PAGE : (i + 1) * PAGE])
                )
            except TdxError as err:
                code = "EBUSY" if err.status & 0xFFFFFFFF00000000 == TdxStatus.OPERAND_BUSY else "EIO"
                raise KvmError(code, err.message, tdx_status=err.status) from err
            self.private_map[gfn] = pa
            if flags & KVM_TDX_MEASURE_MEMORY_REGION:
                for chunk in range(0, PAGE, 256):
                    self._module.tdh_mr_extend(self.tdr_pa, (gfn << PAGE_SHIFT) + chunk)
        return npages

    def tdx_finalize_vm(self) -> bytes:
        if self.tdr_pa < 0 or self.finalized:
            raise einval("TD not initialized or already finalized")
        mrtd = self._module.tdh_mr_finalize(self.tdr_pa)
        self.finalized = True
        return mrtd

    # ---- the fault path ---------------------------------------------------------------
    def _private_pfn(self, gfn: int) -> int | KvmExit:
        """The page backing private ``gfn`` (kvm_gmem_get_pfn), or the memory-fault exit."""
        fault = KvmExit(ExitKind.MEMORY_FAULT, gfn << PAGE_SHIFT, PAGE, KVM_MEMORY_EXIT_FLAG_PRIVATE)
        if self.attributes.get(gfn) != KVM_MEMORY_ATTRIBUTE_PRIVATE:
            return fault
        slot = self.memslots.find(gfn)
        if slot is None:
            return KvmExit(
                fault.kind, fault.gpa, PAGE, fault.flags, detail="no memslot covers this GPA (EFAULT)"
            )
        if self.legacy:
            pa = self._mm.frame(slot.hva(gfn))
            assert pa is not None
            return pa
        gmem = self.gmems.get(slot.guest_memfd)
        if gmem is None:
            return KvmExit(fault.kind, fault.gpa, PAGE, fault.flags, detail="no guest_memfd bound (EFAULT)")
        return gmem.page(slot.gmem_index(gfn), self._pages)

    def _fault_private(self, gpa: int, size: int) -> KvmExit | None:
        """EPT violation on private GPAs: AUG every page (PENDING) or exit on a mismatch."""
        for gfn in range(gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT):
            if gfn in self.private_map:
                continue
            pa = self._private_pfn(gfn)
            if isinstance(pa, KvmExit):
                return pa
            self._module.tdh_mem_page_aug(self.tdr_pa, gfn << PAGE_SHIFT, pa)
            self.private_map[gfn] = pa
        return None

    def _fault_shared(self, gpa: int, size: int) -> KvmExit | None:
        for gfn in range(gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT):
            fault = KvmExit(ExitKind.MEMORY_FAULT, gfn << PAGE_SHIFT, PAGE, 0)
            if self.attributes.get(gfn) == KVM_MEMORY_ATTRIBUTE_PRIVATE:
                return fault
            slot = self.memslots.find(gfn)
            if slot is None or not self._mm.contains(slot.hva(gfn), PAGE):
                return KvmExit(
                    fault.kind, fault.gpa, PAGE, 0, detail="no memslot or userspace memory (EFAULT)"
                )
            pa = self._mm.frame(slot.hva(gfn))
            assert pa is not None
            self.shared_ept[gfn] = pa
        return None

    # ---- what backs a GPA (the host's own knowledge: its page tables and the S-EPT's states) -------------
    def frame_of(self, gfn: int) -> tuple[int, bool] | None:
        """(the physical page backing ``gfn`` now, whether ``gfn`` is private), faulting nothing in; None
        when no page backs it (outside every memslot, or never touched)."""
        slot = self.memslots.find(gfn)
        if slot is None:
            return None
        private = self.attributes.get(gfn) == KVM_MEMORY_ATTRIBUTE_PRIVATE
        pa: int | None = None
        if private:
            pa = self.private_map.get(gfn)
            if pa is None and not self.legacy:
                gmem = self.gmems.get(slot.guest_memfd)
                pa = gmem.pages.get(slot.gmem_index(gfn)) if gmem is not None else None
        if pa is None and (self.legacy or not private) and self._mm.contains(slot.hva(gfn), PAGE):
            pa = self._mm.frame(slot.hva(gfn), populate=False)
        return None if pa is None else (pa, private)

    def gpa_map(self, start_gfn: int, max_runs: int, max_pages: int) -> tuple[list[GpaRun], int | None]:
        """The GPA space from ``start_gfn`` to the end of the last memslot, in runs (docs/memory-model.md
        §1.7).

        Costs the memslots, the attribute ranges and the pages mapped in them, never the size of a range:
        unbacked stretches are one run each. Stops once ``max_runs`` runs are made or ``max_pages`` mapped
        pages visited, and then also returns the gfn to continue from (None when the map is complete)."""
        runs: list[GpaRun] = []
        visited = 0

        def add(run: GpaRun) -> bool:
            """Append or merge; False when the new run would exceed ``max_runs``."""
            if runs and run.follows(runs[-1]):
                last = runs[-1]
                runs[-1] = replace(last, npages=last.npages + run.npages)
                return True
            if len(runs) >= max_runs:
                return False
            runs.append(run)
            return True

        for slot in sorted(self.memslots.slots.values(), key=lambda s: s.base_gfn):
            if slot.end_gfn <= start_gfn:
                continue
            fd = slot.guest_memfd if slot.guest_memfd in self.gmems else -1
            for first, end, value in self.attributes.runs(max(start_gfn, slot.base_gfn), slot.end_gfn):
                private = value == KVM_MEMORY_ATTRIBUTE_PRIVATE
                piece = _RunMaker(slot, private, fd if private else -1)
                pos = first
                for gfn, state in self._backed_pages(slot, first, end, private, max_pages - visited):
                    if gfn > pos:
                        if not add(piece.make(pos, gfn - pos, GpaState.UNBACKED)):
                            return runs, pos
                        pos = gfn
                    if not add(piece.make(gfn, 1, state)):
                        return runs, gfn
                    pos = gfn + 1
                    visited += 1
                    if visited >= max_pages:
                        return runs, pos
                if pos < end and not add(piece.make(pos, end - pos, GpaState.UNBACKED)):
                    return runs, pos
        return runs, None

    def _backed_pages(
        self, slot: Memslot, first: int, end: int, private: bool, limit: int
    ) -> list[tuple[int, GpaState]]:
        """The pages of [first, end) (one attribute value, inside ``slot``) that have a mapping, with their
        states, ascending: the first ``limit`` of them at least, a few more at most."""
        if private:
            out = []
            for gfn in self.private_map.keys_in(first, end, limit):
                pa = self.private_map[gfn]
                if pa in self.hwpoison:
                    out.append((gfn, GpaState.POISONED))
                    continue
                state = SeptState.MAPPED
                if self.tdr_pa >= 0:
                    state = self._module.tdh_mem_sept_rd(self.tdr_pa, gfn << PAGE_SHIFT)
                pending = state in PENDING_STATES
                out.append((gfn, GpaState.PRIVATE_PENDING if pending else GpaState.PRIVATE_ACCEPTED))
            return out
        frames = self._mm.frames_in(slot.hva(first), (end - first) * PAGE, limit)
        return [
            (first + index, GpaState.POISONED if pa in self.hwpoison else GpaState.SHARED)
            for index, pa in frames
        ]

    # ---- KVM_RUN ----------------------------------------------------------------------
    def complete_hypercall(self, ret: int, length: int = 0) -> None:
        """Userspace's answer to KVM_EXIT_HYPERCALL (``run->hypercall.ret``).

        ``length`` (default: the piece of the exit) lets userspace answer several consecutive MapGPA
        pieces at once, up to the exit's ``span``: what it would have answered one exit at a time, so
        KVM accounts each piece (the chunk count, the RETRY point) exactly as if it had exited for each;
        only whole pieces, or up to the end. A failure (``ret`` != 0) answers the exit's piece alone."""
        progress = self._map_gpa
        if progress is None:
            raise einval("no hypercall is pending")
        piece = min(progress.end - progress.next, TDX_MAP_GPA_MAX_LEN)
        length = length or piece
        if ret:
            length = piece
        remaining = progress.end - progress.next
        if not piece <= length <= self._map_gpa_span(progress) or (
            length < remaining and length % TDX_MAP_GPA_MAX_LEN
        ):
            raise einval(f"a MapGPA answer of {length} bytes does not cover whole pieces of this exit")
        progress.ret = ret
        progress.answered = length

    def complete_get_quote(self, ret: int) -> None:
        """Userspace's answer to KVM_EXIT_TDX GET_QUOTE (``run->tdx.get_quote.ret``): the
        TDVMCALL status the guest sees; the quote itself is in the shared buffer."""
        if not self._get_quote_pending:
            raise einval("no GetQuote is pending")
        self._get_quote_ret = ret

    def vcpu_run(self, run: VcpuRun, signal_pending: Callable[[], bool] = _no_signal) -> KvmExit:
        """KVM_RUN: complete the previous exit, then enter the TD until userspace must act.

        Before every TDH.VP.ENTER (and so between bounded chunks of guest work, host/tdx/module.py)
        ``signal_pending`` is checked; when it says yes the call returns KVM_EXIT_INTR and the run ends
        there: what was done stays done, and a MapGPA in progress ends as with a pending vCPU event,
        RETRY with R11 = the GPA to resume at (docs/memory-model.md §2), reported in the exit's ``gpa``."""
        if self.dead:
            raise KvmError("EIO", f"VM is dead: {self.dead}")
        if not self.finalized:
            raise einval("KVM_RUN before KVM_TDX_FINALIZE_VM")
        tdvmcall_return = None
        if self._map_gpa is not None:
            tdvmcall_return, next_exit = self._continue_map_gpa(signal_pending)
            if next_exit is not None:
                return next_exit
        elif self._get_quote_pending:
            if self._get_quote_ret is None:
                raise einval("KVM_RUN with a GetQuote exit not completed")
            tdvmcall_return = TdVmCallResult(self._get_quote_ret)
            self._get_quote_pending, self._get_quote_ret = False, None
        while True:
            if signal_pending():
                resume = tdvmcall_return.failed_gpa if tdvmcall_return is not None else 0
                return KvmExit(ExitKind.INTR, resume, detail="a signal is pending (EINTR)")
            try:
                td_exit = self._module.vp_enter(self.tdr_pa, run, self.shared_ept, tdvmcall_return)
            except TdxError as err:
                self.dead = err.message
                raise KvmError("EIO", err.message, tdx_status=err.status) from err
            tdvmcall_return = None
            self.exits += td_exit.reason is not ExitReason.DONE
            handled = self._handle_exit(td_exit)
            if isinstance(handled, KvmExit):
                return handled
            if isinstance(handled, TdVmCallResult):
                tdvmcall_return = handled

    def _handle_exit(self, td_exit: TdExit) -> KvmExit | TdVmCallResult | None:
        reason = td_exit.reason
        if reason is ExitReason.DONE:
            return KvmExit(ExitKind.DONE)
        if reason is ExitReason.EXTERNAL_INTERRUPT:
            return None  # the host's interrupt is handled; re-enter unless a signal is pending
        if reason is ExitReason.EPT_VIOLATION:
            if td_exit.private:
                return self._fault_private(td_exit.gpa, td_exit.size)
            return self._fault_shared(td_exit.gpa, td_exit.size)
        if reason is ExitReason.PENDING_EPT_VIOLATION:
            self.dead = f"Guest access before accepting 0x{td_exit.gpa:x} on vCPU 0"
            raise KvmError("EIO", self.dead)
        if reason is ExitReason.TDVMCALL:
            if td_exit.subfunction == TdVmCall.MAP_GPA:
                return self._start_map_gpa(td_exit.gpa, td_exit.size)
            if td_exit.subfunction == TdVmCall.GET_QUOTE:
                return self._get_quote(td_exit.gpa, td_exit.size)
            return TdVmCallResult(TdVmCallStatus.SUBFUNC_UNSUPPORTED)
        if reason is ExitReason.FATAL:
            if td_exit.pa >= 0:
                self.hwpoison.add(td_exit.pa - td_exit.pa % PAGE)
            self.dead = td_exit.detail
            return KvmExit(ExitKind.INTERNAL_ERROR, status=td_exit.status, detail=td_exit.detail)
        if reason is ExitReason.VE:
            return KvmExit(ExitKind.GUEST_VE, td_exit.gpa, PAGE, detail=td_exit.detail)
        return KvmExit(ExitKind.GUEST_ERROR, td_exit.gpa, status=td_exit.status, detail=td_exit.detail)

    # ---- TDG.VP.VMCALL<GetQuote> (tdx_get_quote) -------------------------------------
    def _get_quote(self, gpa: int, size: int) -> KvmExit | TdVmCallResult:
        """The buffer must be shared and page-aligned; userspace gets gpa without the shared bit."""
        if gpa % PAGE or size % PAGE or not size or not gpa & self.shared_bit:
            return TdVmCallResult(TdVmCallStatus.INVALID_OPERAND, failed_gpa=gpa)
        if gpa + size > 1 << self.params.gpaw:
            return TdVmCallResult(TdVmCallStatus.INVALID_OPERAND, failed_gpa=gpa)
        self._get_quote_pending = True
        return KvmExit(ExitKind.TDX_GET_QUOTE, gpa & ~self.shared_bit, size)

    # ---- TDG.VP.VMCALL<MapGPA> (tdx_map_gpa) ------------------------------------------
    def _start_map_gpa(self, gpa: int, size: int) -> KvmExit | TdVmCallResult:
        shared_bit = self.shared_bit
        end = gpa + size
        legal = 1 << self.params.gpaw
        if (
            end <= gpa
            or gpa >= legal
            or end - 1 >= legal
            or bool(gpa & shared_bit) != bool((end - 1) & shared_bit)
        ):
            return TdVmCallResult(TdVmCallStatus.INVALID_OPERAND, failed_gpa=gpa)
        if gpa % PAGE or size % PAGE:
            return TdVmCallResult(TdVmCallStatus.ALIGN_ERROR, failed_gpa=gpa)
        self._map_gpa = _MapGpaProgress(next=gpa, end=end, shared=bool(gpa & shared_bit))
        return self._map_gpa_exit(self._map_gpa)

    def _map_gpa_exit(self, progress: _MapGpaProgress) -> KvmExit:
        size = min(progress.end - progress.next, TDX_MAP_GPA_MAX_LEN)
        progress.chunks += 1
        attrs = KVM_MAP_GPA_RANGE_DECRYPTED if progress.shared else KVM_MAP_GPA_RANGE_ENCRYPTED
        return KvmExit(
            ExitKind.HYPERCALL,
            progress.next & ~self.shared_bit,
            size,
            flags=attrs,
            span=self._map_gpa_span(progress),
        )

    def _map_gpa_span(self, progress: _MapGpaProgress) -> int:
        """Bytes from ``progress.next`` one answer may cover: to the end, or through the piece after
        which the simulated pending event (``map_gpa_retry_every``) forces a RETRY."""
        span = progress.end - progress.next
        if self.map_gpa_retry_every:
            pieces = self.map_gpa_retry_every - (progress.chunks - 1) % self.map_gpa_retry_every
            span = min(span, pieces * TDX_MAP_GPA_MAX_LEN)
        return span

    def _continue_map_gpa(
        self, events_pending: Callable[[], bool]
    ) -> tuple[TdVmCallResult | None, KvmExit | None]:
        """tdx_complete_vmcall_map_gpa: advance past the answered pieces, then finish, RETRY or exit
        for the next piece."""
        progress = self._map_gpa
        assert progress is not None
        if progress.ret is None:
            raise einval("KVM_RUN with a MapGPA hypercall exit not completed")
        if progress.ret != 0:
            self._map_gpa = None
            return TdVmCallResult(TdVmCallStatus.INVALID_OPERAND, progress.next, progress.chunks), None
        pieces = -(-progress.answered // TDX_MAP_GPA_MAX_LEN)
        progress.chunks += pieces - 1  # the first was counted when KVM exited for it
        progress.next += progress.answered
        progress.ret = None
        if progress.next >= progress.end:
            self._map_gpa = None
            return TdVmCallResult(TdVmCallStatus.SUCCESS, 0, progress.chunks), None
        if (self.map_gpa_retry_every and progress.chunks % self.map_gpa_retry_every == 0) or events_pending():
            # An event is pending for the vCPU: stop here; the guest resumes from R11.
            self._map_gpa = None
            return TdVmCallResult(TdVmCallStatus.RETRY, progress.next, progress.chunks), None
        return None, self._map_gpa_exit(progress)

    # ---- teardown (docs/memory-model.md §6.5) ------------------------------------------------
    def destroy(self, signal_pending: Callable[[], bool] = _no_signal) -> int:
        """Tear the TD down, reclaim every page it owns and free its KeyID. Returns pages reclaimed.

        VP.FLUSH/VPFLUSHDONE → CACHE.WB → KEY.FREEID (KeyID back to the pool) → PAGE.RECLAIM of
        every TD page, TDR last, each cleared with MOVDIR64B (which also clears poison). Pages are
        reclaimed :data:`~host.kvm.pagealloc.CHUNK` at a time; a pending signal between chunks stops
        the teardown with EINTR, and the next call resumes it (the VM stays dead meanwhile)."""
        self.dead = self.dead or "destroyed"
        if self.tdr_pa >= 0:
            if not self._keys_freed:
                self._module.tdh_mng_vpflushdone(self.tdr_pa)
                status = self._module.tdh_phymem_cache_wb(self.tdr_pa)
                assert not is_error(status)
                self._module.tdh_mng_key_freeid(self.tdr_pa)
                self._keys_freed = True
                self._hkid_free(self.hkid)
            pages = self._module.td_pages(self.tdr_pa)
            for i in range(0, len(pages), CHUNK):
                if signal_pending():
                    raise KvmError("EINTR", f"teardown interrupted after {self._reclaimed} pages")
                chunk = pages[i : i + CHUNK]
                for pa in chunk:
                    self._module.tdh_phymem_page_reclaim(pa)
                self._bus.movdir64b_zero(_runs_of(sorted(chunk)))
                self._pages.free_many([pa for pa in chunk if pa in self._control_pages])
                self._reclaimed += len(chunk)
            self.tdr_pa = -1
        # Nothing maps the pages any more; then they go back to the allocator.
        self.private_map.clear()
        self.shared_ept.clear()
        for gmem in list(self.gmems.values()):
            self._free_gmem_pages(gmem, list(gmem.pages))
            gmem.closed = True
        self.gmems.clear()
        return self._reclaimed


def _runs_of(pages: list[int]) -> list[tuple[int, int]]:
    """Sorted page addresses as (start, length) runs of physically contiguous pages."""
    runs: list[tuple[int, int]] = []
    for pa in pages:
        if runs and runs[-1][0] + runs[-1][1] == pa:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE)
        else:
            runs.append((pa, PAGE))
    return runs
