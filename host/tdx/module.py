"""The TDX module: SEAMCALL leaves for the host and the TD-execution path
(docs/memory-model.md §4–§6, §8; intel/tdx-module ``src/vmm_dispatcher/api_calls/``,
``src/td_dispatcher/``).

Public methods named ``tdh_*`` are the SEAMCALL leaves KVM may call; :meth:`TdxModule.vp_enter`
is TDH.VP.ENTER: it runs guest instructions (:mod:`host.tdx.vcpu`) in SEAM non-root mode,
translating private GPAs through the Secure-EPT and touching memory with the TD's KeyID via
the memory controller, until the host must act. A leaf that fails raises
:class:`~host.tdx.status.TdxError` with the real status; a warning is returned.

TDs are addressed, as on the real module, by the physical address of their TDR page.

Concurrency: KVM calls the module for different TDs at once, as CPUs do. A TD's own state (its
:class:`~host.tdx.tdcs.Td`: Secure-EPT, measurements, OP_STATE) changes only through the calls KVM makes for
that TD, which KVM's caller serialises per TD. What TDs share has its own small locks, never held while
taking another: the TD table, the PAMT and the KeyID Ownership Table under one metadata lock, and the memory
controller under the memory lock (shared with the KeyID-0 host bus), taken per batch of at most
:data:`MEMORY_BATCH` bytes. One TDH.VP.ENTER does at most :data:`ENTRY_BUDGET` pages of work before it exits
to the host with EXTERNAL_INTERRUPT (the host's timer tick), so a vCPU returns to KVM between bounded chunks
of a large request, where KVM can see a pending signal (docs/memory-model.md §5, §6.4).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from attest.formats.quote import TdReport15
from attest.formats.tdreport import encode_tdreport, tdreport_hashes_match, tdreport_mac_input
from host.tdx.keyids import KeyOwnerTable
from host.tdx.measure import MR_EXTEND_CHUNK, rtmr_extend
from host.tdx.memctl import PAGE, MachineCheck, MemoryController
from host.tdx.sept import BLOCKED_STATES, PENDING_STATES, Leaf, SeptState
from host.tdx.status import TdxError
from host.tdx.tdcs import OpState, SeamIdentity, Td, TdAttributes, TdLifecycle, TdParams
from host.tdx.vcpu import (
    Accept,
    AcceptResult,
    ExitReason,
    MapGpa,
    MemRead,
    MemWrite,
    Report,
    RtmrExtend,
    TdCallResult,
    TdExit,
    TdVmCallResult,
    VcpuRun,
)
from wire.tdx_abi import MR_SIZE, OperandId, TdVmCall, TdxStatus

PAGE_SHIFT = 12
MAX_FAULT_RUN = 512  # pages reported by one EPT-violation exit (2 MiB)
RTMR_COUNT = 4
#: Pages of guest work (accepted pages, accessed pages, one per other instruction) one TDH.VP.ENTER
#: does before the host's timer takes the CPU back (an EXTERNAL_INTERRUPT exit, then re-entry).
ENTRY_BUDGET = 512
#: Bytes the memory controller processes per hold of the memory lock.
MEMORY_BATCH = 4 << 20


class PamtType:
    """PAMT page types (docs/memory-model.md §6.5)."""

    PT_NDA = 0
    PT_REG = 2
    PT_TDR = 3
    PT_TDCX = 4
    PT_TDVPR = 5


@dataclass(frozen=True)
class SysInfo:
    """TDH.SYS.INFO: what the host needs to know about the module."""

    keyid_first: int
    keyid_count: int
    integrity: bool
    phys_bytes: int


class TdxModule:
    def __init__(
        self,
        mc: MemoryController,
        *,
        keyid_first: int = 16,
        keyid_count: int = 48,
        seam: SeamIdentity | None = None,
        memory_lock: threading.Lock | None = None,
    ) -> None:
        self._mc = mc
        #: Held around every memory-controller call; the host bus of the same machine shares it.
        self.memory_lock = memory_lock or threading.Lock()
        #: The TD table, the PAMT and the KOT.
        self._lock = threading.Lock()
        self._seam = seam or SeamIdentity()
        #: The platform-bound key that MACs TDREPORTs; only this CPU (and the QE via
        #: EVERIFYREPORT2, :meth:`verify_report`) can check it.
        self._report_key = os.urandom(32)
        self._kot = KeyOwnerTable(keyid_first, keyid_count)
        self._tds: dict[int, Td] = {}
        #: PAMT: pa → (page type, owning TDR pa, gfn it backs or -1). Absent = PT_NDA.
        self._pamt: dict[int, tuple[int, int, int]] = {}

    # ---- queries -------------------------------------------------------------------------
    def tdh_sys_info(self) -> SysInfo:
        return SysInfo(self._kot.first, self._kot.count, self._mc.integrity, len(self._mc.phys))

    def td_summary(self, tdr_pa: int) -> Td:
        """Read-only view for host diagnostics (TDH.MNG.RD of non-secret fields)."""
        return self._td(tdr_pa)

    @property
    def poisoned_lines(self) -> int:
        return self._mc.poisoned_lines

    # ---- helpers -------------------------------------------------------------------------
    def _td(self, tdr_pa: int) -> Td:
        td = self._tds.get(tdr_pa)
        if td is None:
            raise TdxError(TdxStatus.OPERAND_INVALID | OperandId.RCX, f"0x{tdr_pa:x} is not a TDR page")
        return td

    def _claim_page(self, pa: int, page_type: int, owner: int, operand: OperandId, gfn: int = -1) -> None:
        if pa % PAGE or not 0 <= pa < len(self._mc.phys):
            raise TdxError(TdxStatus.OPERAND_ADDR_RANGE_ERROR | operand, f"page 0x{pa:x} is not a valid page")
        with self._lock:
            if pa in self._pamt:
                raise TdxError(TdxStatus.PAGE_METADATA_INCORRECT | operand, f"page 0x{pa:x} is not PT_NDA")
            self._pamt[pa] = (page_type, owner, gfn)
            if page_type != PamtType.PT_TDR:
                self._tds[owner].pages.add(pa)

    def _release_page(self, td: Td, pa: int) -> None:
        """The page goes back to PT_NDA."""
        with self._lock:
            del self._pamt[pa]
            td.pages.discard(pa)

    def _mc_read(self, keyid: int, runs: Sequence[tuple[int, int]]) -> list[bytes]:
        with self.memory_lock:
            return self._mc.read(keyid, runs)

    def _mc_write(self, keyid: int, runs: Sequence[tuple[int, bytes | memoryview]]) -> None:
        with self.memory_lock:
            self._mc.write(keyid, runs)

    def _mc_zero(self, keyid: int, runs: Sequence[tuple[int, int]]) -> None:
        with self.memory_lock:
            self._mc.zero(keyid, runs)

    def _private_gfn(self, td: Td, gpa: int) -> int:
        if gpa % PAGE or gpa & td.params.shared_bit or gpa >= (1 << td.params.gpaw):
            raise TdxError(
                TdxStatus.OPERAND_INVALID | OperandId.RCX, f"gpa 0x{gpa:x} is not a private page GPA"
            )
        return gpa >> PAGE_SHIFT

    # ---- TD build ------------------------------------------------------------------------
    def tdh_mng_create(self, tdr_pa: int, hkid: int) -> None:
        with self._lock:
            self._kot.assign(hkid)
        try:
            self._claim_page(tdr_pa, PamtType.PT_TDR, tdr_pa, OperandId.RCX)
        except TdxError:
            with self._lock:
                self._kot.flush(hkid)
                self._kot.free(hkid)
            raise
        with self._lock:
            self._tds[tdr_pa] = Td(tdr_pa=tdr_pa, hkid=hkid)

    def tdh_mng_key_config(self, tdr_pa: int) -> None:
        """Program the TD's random ephemeral key (PCONFIG SET_KEY_RANDOM) on every package."""
        td = self._td(tdr_pa)
        if td.lifecycle is TdLifecycle.TD_KEYS_CONFIGURED:
            raise TdxError(TdxStatus.KEY_CONFIGURED, "keys already configured")
        td.require_lifecycle("TDH.MNG.KEY.CONFIG", TdLifecycle.TD_HKID_ASSIGNED)
        with self.memory_lock:
            self._mc.program_key(td.hkid)
        td.lifecycle = TdLifecycle.TD_KEYS_CONFIGURED

    def tdh_mng_addcx(self, tdr_pa: int, page_pa: int) -> None:
        td = self._td(tdr_pa)
        td.require_op_state("TDH.MNG.ADDCX", OpState.UNINITIALIZED)
        self._claim_page(page_pa, PamtType.PT_TDCX, tdr_pa, OperandId.RCX)
        td.control_pages.append(page_pa)

    def tdh_mng_init(self, tdr_pa: int, params: TdParams) -> None:
        td = self._td(tdr_pa)
        td.require_lifecycle("TDH.MNG.INIT", TdLifecycle.TD_KEYS_CONFIGURED)
        td.require_op_state("TDH.MNG.INIT", OpState.UNINITIALIZED)
        params.check()
        td.params = params
        td.op_state = OpState.INITIALIZED

    def tdh_vp_create(self, tdr_pa: int, tdvpr_pa: int) -> None:
        td = self._td(tdr_pa)
        td.require_op_state("TDH.VP.CREATE", OpState.INITIALIZED, OpState.RUNNABLE)
        self._claim_page(tdvpr_pa, PamtType.PT_TDVPR, tdr_pa, OperandId.RCX)
        td.control_pages.append(tdvpr_pa)
        td.vcpus += 1

    def tdh_mem_page_add(self, tdr_pa: int, gpa: int, page_pa: int, source: bytes) -> None:
        """Copy ``source`` into ``page_pa`` under the TD key, map it MAPPED and extend MRTD."""
        td = self._td(tdr_pa)
        td.require_op_state("TDH.MEM.PAGE.ADD", OpState.INITIALIZED)
        gfn = self._private_gfn(td, gpa)
        if len(source) != PAGE:
            raise TdxError(TdxStatus.OPERAND_INVALID | OperandId.R8, "source must be one 4 KiB page")
        if td.sept.state(gfn) is not SeptState.FREE:
            raise TdxError(TdxStatus.EPT_ENTRY_NOT_FREE | OperandId.RCX, f"gpa 0x{gpa:x} is already mapped")
        self._claim_page(page_pa, PamtType.PT_REG, tdr_pa, OperandId.R8, gfn)
        td.sept.transition(Leaf.PAGE_ADD, gfn, page_pa)
        self._mc_write(td.hkid, [(page_pa, source)])
        td.mrtd.page_add(gpa)

    def tdh_mr_extend(self, tdr_pa: int, gpa: int) -> None:
        """Extend MRTD with one 256-byte chunk of a MAPPED page, read with the TD key."""
        td = self._td(tdr_pa)
        td.require_op_state("TDH.MR.EXTEND", OpState.INITIALIZED)
        if gpa % MR_EXTEND_CHUNK:
            raise TdxError(
                TdxStatus.OPERAND_INVALID | OperandId.RCX, f"gpa 0x{gpa:x} is not 256-byte aligned"
            )
        entry = td.sept.get(gpa >> PAGE_SHIFT)
        if entry is None or entry.state is not SeptState.MAPPED:
            raise TdxError(TdxStatus.EPT_ENTRY_NOT_PRESENT | OperandId.RCX, f"gpa 0x{gpa:x} is not MAPPED")
        (chunk,) = self._mc_read(td.hkid, [(entry.pa + gpa % PAGE, MR_EXTEND_CHUNK)])
        td.mrtd.extend(gpa, chunk)

    def tdh_mr_finalize(self, tdr_pa: int) -> bytes:
        td = self._td(tdr_pa)
        td.require_op_state("TDH.MR.FINALIZE", OpState.INITIALIZED)
        td.op_state = OpState.RUNNABLE
        return td.mrtd.finalize()

    # ---- runtime memory management ---------------------------------------------------------
    def tdh_mem_page_aug(self, tdr_pa: int, gpa: int, page_pa: int) -> None:
        """Map ``page_pa`` at ``gpa`` as PENDING: the guest must TDG.MEM.PAGE.ACCEPT it."""
        td = self._td(tdr_pa)
        td.require_op_state("TDH.MEM.PAGE.AUG", OpState.INITIALIZED, OpState.RUNNABLE)
        gfn = self._private_gfn(td, gpa)
        if td.sept.state(gfn) not in (SeptState.FREE, SeptState.REMOVED):
            raise TdxError(TdxStatus.EPT_ENTRY_STATE_INCORRECT | OperandId.RCX, f"gpa 0x{gpa:x} is mapped")
        self._claim_page(page_pa, PamtType.PT_REG, tdr_pa, OperandId.R8, gfn)
        td.sept.transition(Leaf.PAGE_AUG, gfn, page_pa)

    def tdh_mem_sept_rd(self, tdr_pa: int, gpa: int) -> SeptState:
        """TDH.MEM.SEPT.RD (leaf 25): the state of the Secure-EPT leaf entry for private ``gpa`` (FREE when
        none). The host may read the S-EPT's entries, never the pages they map."""
        td = self._td(tdr_pa)
        return td.sept.state(self._private_gfn(td, gpa))

    def tdh_mem_range_block(self, tdr_pa: int, gpa: int) -> int:
        td = self._td(tdr_pa)
        gfn = self._private_gfn(td, gpa)
        entry = td.sept.get(gfn)
        if entry is not None and entry.state in BLOCKED_STATES:
            return int(TdxStatus.GPA_RANGE_ALREADY_BLOCKED)
        entry = td.sept.transition(Leaf.RANGE_BLOCK, gfn)
        entry.block_epoch = td.epoch
        return int(TdxStatus.SUCCESS)

    def tdh_mem_track(self, tdr_pa: int) -> None:
        """Advance the TD's TLB epoch; KVM then kicks every vCPU out of the old epoch."""
        self._td(tdr_pa).epoch += 1

    def tdh_mem_page_remove(self, tdr_pa: int, gpa: int) -> int:
        """Unmap a blocked, TLB-tracked page; returns its PA, now PT_NDA (contents destroyed)."""
        td = self._td(tdr_pa)
        gfn = self._private_gfn(td, gpa)
        entry = td.sept.get(gfn)
        if entry is None:
            raise TdxError(TdxStatus.EPT_ENTRY_FREE | OperandId.RCX, f"gpa 0x{gpa:x} is FREE")
        if td.op_state is OpState.RUNNABLE and not td.fatal:
            if entry.state not in BLOCKED_STATES:
                raise TdxError(
                    TdxStatus.GPA_RANGE_NOT_BLOCKED | OperandId.RCX, f"gpa 0x{gpa:x} is not blocked"
                )
            if entry.block_epoch >= td.epoch:
                raise TdxError(TdxStatus.TLB_TRACKING_NOT_DONE | OperandId.TD_EPOCH, "TDH.MEM.TRACK not done")
        td.sept.transition(Leaf.PAGE_REMOVE, gfn)
        self._release_page(td, entry.pa)
        return entry.pa

    def tdh_phymem_page_wbinvd(self, page_pa: int) -> None:
        """Write back and invalidate the cache lines of a page with its private KeyID (no-op here:
        the simulated memory controller has no cache)."""
        with self._lock:
            in_use = page_pa in self._pamt
        if in_use:
            raise TdxError(TdxStatus.PAGE_METADATA_INCORRECT | OperandId.RCX, f"page 0x{page_pa:x} is in use")

    # ---- teardown ------------------------------------------------------------------------
    def tdh_mng_vpflushdone(self, tdr_pa: int) -> None:
        td = self._td(tdr_pa)
        td.require_lifecycle(
            "TDH.MNG.VPFLUSHDONE", TdLifecycle.TD_KEYS_CONFIGURED, TdLifecycle.TD_HKID_ASSIGNED
        )
        td.lifecycle = TdLifecycle.TD_BLOCKED

    def tdh_phymem_cache_wb(self, tdr_pa: int) -> int:
        td = self._td(tdr_pa)
        td.require_lifecycle("TDH.PHYMEM.CACHE.WB", TdLifecycle.TD_BLOCKED)
        with self._lock:
            self._kot.flush(td.hkid)
        return int(TdxStatus.SUCCESS)

    def tdh_mng_key_freeid(self, tdr_pa: int) -> None:
        td = self._td(tdr_pa)
        td.require_lifecycle("TDH.MNG.KEY.FREEID", TdLifecycle.TD_BLOCKED)
        with self._lock:
            self._kot.free(td.hkid)
        with self.memory_lock:
            self._mc.clear_key(td.hkid)
        td.lifecycle = TdLifecycle.TD_TEARDOWN

    def tdh_phymem_page_reclaim(self, page_pa: int) -> None:
        """Return a page of a torn-down TD to the host (PT_NDA). The TDR page goes last."""
        with self._lock:
            owner = self._pamt.get(page_pa)
        if owner is None:
            raise TdxError(TdxStatus.PAGE_METADATA_INCORRECT | OperandId.RCX, f"page 0x{page_pa:x} is PT_NDA")
        page_type, tdr_pa, gfn = owner
        td = self._td(tdr_pa)
        td.require_lifecycle("TDH.PHYMEM.PAGE.RECLAIM", TdLifecycle.TD_TEARDOWN)
        if page_type == PamtType.PT_TDR:
            with self._lock:
                if td.pages:
                    raise TdxError(
                        TdxStatus.OPERAND_BUSY | OperandId.TDR, "TDR reclaimed before the TD's other pages"
                    )
                del self._tds[tdr_pa]
                del self._pamt[page_pa]
            return
        if page_type == PamtType.PT_REG and td.sept.get(gfn) is not None:
            td.sept.transition(Leaf.PAGE_REMOVE, gfn)
        self._release_page(td, page_pa)

    def td_pages(self, tdr_pa: int) -> list[int]:
        """Every page a TD still owns, ascending, TDR last, for the host's reclaim loop (the TD's own
        list: the cost is the TD's pages, never the machine's)."""
        td = self._td(tdr_pa)
        with self._lock:
            pages = sorted(td.pages)
        return [*pages, tdr_pa]

    # ---- TD execution --------------------------------------------------------------------
    def vp_enter(
        self,
        tdr_pa: int,
        run: VcpuRun,
        shared_ept: Mapping[int, int],
        tdvmcall_return: TdVmCallResult | None = None,
    ) -> TdExit:
        """TDH.VP.ENTER: run ``run`` from its cursor until it is done or the host must act.

        ``shared_ept`` is KVM's shared EPT (gfn → host PA, KeyID 0). ``tdvmcall_return``
        completes the TDVMCALL the previous exit asked for."""
        td = self._td(tdr_pa)
        if td.fatal:
            raise TdxError(TdxStatus.NON_RECOVERABLE_TD_NON_ACCESSIBLE, td.fatal)
        td.require_op_state("TDH.VP.ENTER", OpState.RUNNABLE)
        if tdvmcall_return is not None:
            run.results[run.index] = tdvmcall_return
            run.index += 1
            run.offset = 0
        budget = ENTRY_BUDGET
        while run.index < len(run.ops):
            if budget <= 0:
                return TdExit(ExitReason.EXTERNAL_INTERRUPT)
            op = run.ops[run.index]
            before = run.offset
            try:
                if isinstance(op, MemRead | MemWrite):
                    td_exit = self._access(td, op, run, shared_ept)
                    budget -= (run.offset - before) // PAGE
                elif isinstance(op, Accept):
                    td_exit = self._accept(td, op, run, budget)
                    budget -= run.offset - before
                elif isinstance(op, RtmrExtend):
                    td_exit = self._rtmr_extend(td, op, run)
                elif isinstance(op, Report):
                    td_exit = self._report(td, op, run)
                else:
                    sub = TdVmCall.MAP_GPA if isinstance(op, MapGpa) else TdVmCall.GET_QUOTE
                    td_exit = TdExit(ExitReason.TDVMCALL, gpa=op.gpa, size=op.size, subfunction=sub)
            except MachineCheck as mc:
                td.fatal = f"machine check consuming poisoned line at PA 0x{mc.pa:x}"
                return TdExit(
                    ExitReason.FATAL,
                    status=int(TdxStatus.NON_RECOVERABLE_TD_NON_ACCESSIBLE),
                    detail=td.fatal,
                    pa=mc.pa,
                )
            budget -= 1
            if td_exit is not None:
                return td_exit
            run.index += 1
            run.offset = 0
            run.buffer = bytearray()
        return TdExit(ExitReason.DONE)

    def _missing_run(self, td: Td, gfn: int, last_gfn: int, shared: bool, ept: Mapping[int, int]) -> int:
        n = 1
        while n < MAX_FAULT_RUN and gfn + n <= last_gfn:
            present = (gfn + n) in ept if shared else td.sept.get(gfn + n) is not None
            if present:
                break
            n += 1
        return n

    def _access(self, td: Td, op: MemRead | MemWrite, run: VcpuRun, ept: Mapping[int, int]) -> TdExit | None:
        """Private (S-EPT, TD KeyID) or shared (shared EPT, KeyID 0) read/write from the cursor."""
        shared_bit = td.params.shared_bit
        shared = bool(op.gpa & shared_bit)
        base = op.gpa & ~shared_bit
        total = op.length if isinstance(op, MemRead) else len(op.data)
        if base + total > shared_bit or total <= 0:
            return self._tdcall_operand_error(OperandId.RCX, op.gpa, "access is empty or beyond GPAW")
        keyid = 0 if shared else td.hkid
        runs: list[tuple[int, int, int]] = []  # (pa, op offset, length)
        pos = run.offset
        stop: TdExit | None = None
        while pos < total:
            gpa = base + pos
            gfn = gpa >> PAGE_SHIFT
            chunk = min(total - pos, PAGE - gpa % PAGE)
            if shared:
                frame = ept.get(gfn)
                if frame is None:
                    last = (base + total - 1) >> PAGE_SHIFT
                    n = self._missing_run(td, gfn, last, True, ept)
                    stop = TdExit(
                        ExitReason.EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, size=n * PAGE, private=False
                    )
                    break
            else:
                entry = td.sept.get(gfn)
                if entry is None or entry.state in BLOCKED_STATES or entry.state is SeptState.REMOVED:
                    last = (base + total - 1) >> PAGE_SHIFT
                    n = self._missing_run(td, gfn, last, False, ept) if entry is None else 1
                    stop = TdExit(
                        ExitReason.EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, size=n * PAGE, private=True
                    )
                    break
                if entry.state in PENDING_STATES:
                    if td.params.attributes & TdAttributes.SEPT_VE_DISABLE:
                        stop = TdExit(ExitReason.PENDING_EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, private=True)
                    else:
                        stop = TdExit(
                            ExitReason.VE,
                            gpa=gfn << PAGE_SHIFT,
                            private=True,
                            detail="#VE: page not accepted",
                        )
                    break
                frame = entry.pa
            pa = frame + gpa % PAGE
            if runs and runs[-1][0] + runs[-1][2] == pa:
                prev = runs[-1]
                runs[-1] = (prev[0], prev[1], prev[2] + chunk)
            else:
                runs.append((pa, pos, chunk))
            pos += chunk
        if isinstance(op, MemWrite):
            data = memoryview(op.data)
            for batch in _batches(runs):
                self._mc_write(keyid, [(pa, data[off : off + n]) for pa, off, n in batch])
        else:
            for batch in _batches(runs):
                for piece in self._mc_read(keyid, [(pa, n) for pa, _, n in batch]):
                    run.buffer += piece
        run.offset = pos
        if stop is None:
            run.results[run.index] = bytes(run.buffer) if isinstance(op, MemRead) else total
        return stop

    def _accept(self, td: Td, op: Accept, run: VcpuRun, limit: int) -> TdExit | None:
        """TDG.MEM.PAGE.ACCEPT page by page from the cursor (docs/memory-model.md §5), at most ``limit``
        pages in this entry: then an EXTERNAL_INTERRUPT exit, and the next entry resumes at the cursor."""
        result = run.results[run.index]
        if not isinstance(result, AcceptResult):
            result = run.results[run.index] = AcceptResult()
        if op.level not in (0, 1, 2):
            return self._tdcall_operand_error(OperandId.RCX, op.gpa, f"ACCEPT level {op.level} is not 0..2")
        unit = PAGE << (9 * op.level)
        if (
            op.gpa % unit
            or op.size % unit
            or op.gpa & td.params.shared_bit
            or op.gpa + op.size > td.params.shared_bit
            or op.size == 0
        ):
            what = "ACCEPT range must be non-empty, private, inside GPAW and aligned to its level"
            return self._tdcall_operand_error(OperandId.RCX, op.gpa, what)
        pages_per_unit = unit // PAGE
        to_zero: list[tuple[int, int]] = []
        stop: TdExit | None = None
        pos = run.offset  # in pages
        total = op.size // PAGE
        last_gfn = (op.gpa + op.size - 1) >> PAGE_SHIFT
        stop_at = pos + max(limit, 1)
        while pos < total:
            if pos >= stop_at:
                stop = TdExit(ExitReason.EXTERNAL_INTERRUPT)
                break
            gfn = (op.gpa >> PAGE_SHIFT) + pos
            entry = td.sept.get(gfn)
            if entry is None or entry.state in BLOCKED_STATES:
                n = self._missing_run(td, gfn, last_gfn, False, {}) if entry is None else 1
                stop = TdExit(
                    ExitReason.EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, size=n * PAGE, private=True, accept=True
                )
                break
            if pages_per_unit > 1:
                # Mainline KVM maps TD memory at 4 KiB: a 2M/1G accept finds a 4K leaf.
                result.status = TdxStatus.PAGE_SIZE_MISMATCH | op.level
                break
            if entry.state is SeptState.MAPPED:
                result.already_accepted += 1
                result.status = TdxStatus.PAGE_ALREADY_ACCEPTED | op.level
            else:
                td.sept.transition(Leaf.PAGE_ACCEPT, gfn)
                result.accepted += 1
                if to_zero and to_zero[-1][0] + to_zero[-1][1] == entry.pa:
                    to_zero[-1] = (to_zero[-1][0], to_zero[-1][1] + PAGE)
                else:
                    to_zero.append((entry.pa, PAGE))
            pos += 1
        if to_zero:
            self._mc_zero(td.hkid, to_zero)
        run.offset = pos
        return stop

    # ---- measurement and reports (docs/memory-model.md §8) ----------------------------------------
    def _private_page(self, td: Td, gpa: int) -> int | TdExit:
        """Host PA of the accepted private page holding ``gpa``, or the exit a touch would cause."""
        gfn = gpa >> PAGE_SHIFT
        entry = td.sept.get(gfn)
        if entry is None or entry.state in BLOCKED_STATES or entry.state is SeptState.REMOVED:
            return TdExit(ExitReason.EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, size=PAGE, private=True)
        if entry.state in PENDING_STATES:
            if td.params.attributes & TdAttributes.SEPT_VE_DISABLE:
                return TdExit(ExitReason.PENDING_EPT_VIOLATION, gpa=gfn << PAGE_SHIFT, private=True)
            return TdExit(ExitReason.VE, gpa=gfn << PAGE_SHIFT, private=True, detail="#VE: page not accepted")
        return entry.pa + gpa % PAGE

    def _tdcall_operand_error(self, operand: OperandId, gpa: int, what: str) -> TdExit:
        status = int(TdxStatus.OPERAND_INVALID | operand)
        return TdExit(ExitReason.TDCALL_ERROR, gpa=gpa, status=status, detail=what)

    def _is_private_aligned(self, td: Td, gpa: int, align: int) -> bool:
        return not (gpa % align or gpa & td.params.shared_bit or gpa >= td.params.shared_bit)

    def _rtmr_extend(self, td: Td, op: RtmrExtend, run: VcpuRun) -> TdExit | None:
        """TDG.MR.RTMR.EXTEND: the 48 bytes are read with the TD key from a private 64-B aligned GPA."""
        if not self._is_private_aligned(td, op.gpa, 64):
            return self._tdcall_operand_error(
                OperandId.RCX, op.gpa, "RTMR data GPA must be private and 64-byte aligned"
            )
        if not 0 <= op.index < RTMR_COUNT:
            return self._tdcall_operand_error(OperandId.RDX, op.gpa, f"RTMR index {op.index} is not 0..3")
        pa = self._private_page(td, op.gpa)
        if isinstance(pa, TdExit):
            return pa
        (data,) = self._mc_read(td.hkid, [(pa, MR_SIZE)])
        td.rtmr[op.index] = rtmr_extend(td.rtmr[op.index], data)
        run.results[run.index] = TdCallResult()
        return None

    def _report(self, td: Td, op: Report, run: VcpuRun) -> TdExit | None:
        """TDG.MR.REPORT: build the TDREPORT_STRUCT, MAC it with the platform key and store it at the
        private, 1024-byte aligned ``report_gpa``."""
        if not self._is_private_aligned(td, op.report_gpa, 1024):
            return self._tdcall_operand_error(
                OperandId.RCX, op.report_gpa, "report GPA must be private, 1024-aligned"
            )
        if not self._is_private_aligned(td, op.reportdata_gpa, 64):
            return self._tdcall_operand_error(
                OperandId.RDX, op.reportdata_gpa, "REPORTDATA GPA must be 64-aligned"
            )
        data_pa = self._private_page(td, op.reportdata_gpa)
        if isinstance(data_pa, TdExit):
            return data_pa
        report_pa = self._private_page(td, op.report_gpa)
        if isinstance(report_pa, TdExit):
            return report_pa
        (report_data,) = self._mc_read(td.hkid, [(data_pa, 64)])
        raw = self.build_tdreport(td, report_data)
        self._mc_write(td.hkid, [(report_pa, raw)])
        run.results[run.index] = TdCallResult()
        return None

    def build_tdreport(self, td: Td, report_data: bytes) -> bytes:
        seam, params = self._seam, td.params
        body = TdReport15(
            tee_tcb_svn=seam.tee_tcb_svn,
            mr_seam=seam.mr_seam,
            mr_signer_seam=seam.mr_signer_seam,
            seam_attributes=seam.seam_attributes,
            td_attributes=params.attributes.to_bytes(8, "little"),
            xfam=params.xfam.to_bytes(8, "little"),
            mr_td=td.mrtd.value,
            mr_config_id=params.mrconfigid,
            mr_owner=params.mrowner,
            mr_owner_config=params.mrownerconfig,
            rtmr0=td.rtmr[0],
            rtmr1=td.rtmr[1],
            rtmr2=td.rtmr[2],
            rtmr3=td.rtmr[3],
            report_data=report_data,
            tee_tcb_svn2=seam.tee_tcb_svn2,
            mr_service_td=bytes(MR_SIZE),
        )
        unsigned = encode_tdreport(body, cpu_svn=seam.cpu_svn, tee_tcb_info_valid=seam.tee_tcb_info_valid)
        mac = hmac.new(self._report_key, tdreport_mac_input(unsigned), hashlib.sha256).digest()
        return encode_tdreport(
            body, cpu_svn=seam.cpu_svn, tee_tcb_info_valid=seam.tee_tcb_info_valid, mac=mac
        )

    def verify_report(self, raw: bytes) -> bool:
        """EVERIFYREPORT2 / TDG.MR.VERIFYREPORT: True when ``raw`` is a TDREPORT this platform made,
        unaltered. Only code on this host (the quoting enclave) can use it."""
        if len(raw) != 1024 or raw[0] != 0x81 or not tdreport_hashes_match(raw):
            return False
        expected = hmac.new(self._report_key, tdreport_mac_input(raw), hashlib.sha256).digest()
        return hmac.compare_digest(expected, raw[224:256])


def _batches(runs: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """``(pa, offset, length)`` runs in batches of at most :data:`MEMORY_BATCH` bytes, in order; a longer run
    is cut at page boundaries (so whole lines stay whole)."""
    batches: list[list[tuple[int, int, int]]] = []
    batch: list[tuple[int, int, int]] = []
    size = 0
    for pa, off, n in runs:
        while n:
            room = MEMORY_BATCH - size
            take = n if n <= room else room - (pa + room) % PAGE
            if take <= 0:
                batches.append(batch)
                batch, size = [], 0
                continue
            batch.append((pa, off, take))
            size += take
            pa, off, n = pa + take, off + take, n - take
    if batch:
        batches.append(batch)
    return batches
