"""TD control structures held by the TDX module: TDR lifecycle, TDCS operation state and
the per-TD measurement/S-EPT state (docs/memory-model.md §4.2 OP_STATE gating, §6.1, §6.5).

Lifecycle (TDR): TD_HKID_ASSIGNED (TDH.MNG.CREATE) → TD_KEYS_CONFIGURED (TDH.MNG.KEY.CONFIG)
→ TD_BLOCKED (TDH.MNG.VPFLUSHDONE) → TD_TEARDOWN (TDH.MNG.KEY.FREEID).
OP_STATE (TDCS): UNINITIALIZED → INITIALIZED (TDH.MNG.INIT) → RUNNABLE (TDH.MR.FINALIZE).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from host.tdx.measure import Mrtd
from host.tdx.sept import SecureEpt
from host.tdx.status import TdxError
from wire.tdx_abi import MR_SIZE, OperandId, TdxStatus


class TdLifecycle(enum.IntEnum):
    TD_HKID_ASSIGNED = 0
    TD_KEYS_CONFIGURED = 1
    TD_BLOCKED = 2
    TD_TEARDOWN = 3


class OpState(enum.IntEnum):
    UNINITIALIZED = 0
    INITIALIZED = 1
    RUNNABLE = 2


class TdAttributes(enum.IntFlag):
    """TDX TD attributes this simulator interprets (TDX module spec, TDATTRIBUTES)."""

    DEBUG = 1 << 0
    SEPT_VE_DISABLE = 1 << 28
    PKS = 1 << 30
    KL = 1 << 31
    PERFMON = 1 << 63


#: Attributes a TD may be created with (KVM supports SEPT_VE_DISABLE plus the fixed ones; DEBUG
#: is accepted so that debug TDs can be simulated and refused by verifier policy).
SUPPORTED_ATTRIBUTES = TdAttributes.DEBUG | TdAttributes.SEPT_VE_DISABLE | TdAttributes.PKS | TdAttributes.KL


@dataclass
class TdParams:
    """TD_PARAMS as passed to TDH.MNG.INIT (the subset this simulator uses)."""

    attributes: int = int(TdAttributes.SEPT_VE_DISABLE)
    xfam: int = 0x61AE7
    gpaw: int = 48
    mrconfigid: bytes = bytes(MR_SIZE)
    mrowner: bytes = bytes(MR_SIZE)
    mrownerconfig: bytes = bytes(MR_SIZE)

    def check(self) -> None:
        """Raises OPERAND_INVALID for values TDH.MNG.INIT refuses."""
        if self.attributes & ~int(SUPPORTED_ATTRIBUTES):
            raise TdxError(
                TdxStatus.OPERAND_INVALID | OperandId.RDX, f"unsupported attributes 0x{self.attributes:x}"
            )
        if self.gpaw not in (48, 52):
            raise TdxError(TdxStatus.OPERAND_INVALID | OperandId.RDX, f"GPAW {self.gpaw} is not 48 or 52")
        for name in ("mrconfigid", "mrowner", "mrownerconfig"):
            if len(getattr(self, name)) != MR_SIZE:
                raise TdxError(TdxStatus.OPERAND_INVALID | OperandId.RDX, f"{name} must be {MR_SIZE} bytes")

    @property
    def shared_bit(self) -> int:
        return 1 << (self.gpaw - 1)


@dataclass
class Td:
    """One TD as the module sees it, keyed by the physical address of its TDR page."""

    tdr_pa: int
    hkid: int
    lifecycle: TdLifecycle = TdLifecycle.TD_HKID_ASSIGNED
    op_state: OpState = OpState.UNINITIALIZED
    params: TdParams = field(default_factory=TdParams)
    sept: SecureEpt = field(default_factory=SecureEpt)
    mrtd: Mrtd = field(default_factory=Mrtd)
    rtmr: list[bytes] = field(default_factory=lambda: [bytes(MR_SIZE)] * 4)
    #: TLB epoch advanced by TDH.MEM.TRACK.
    epoch: int = 0
    #: Set when a machine check hit the TD: every later VP.ENTER fails.
    fatal: str = ""
    vcpus: int = 0
    #: Control pages (TDCS, TDVPR) owned by this TD, reclaimed at teardown.
    control_pages: list[int] = field(default_factory=list)
    #: Every page the PAMT gives to this TD besides its TDR (control pages and guest pages).
    pages: set[int] = field(default_factory=set)

    def require_op_state(self, leaf: str, *allowed: OpState) -> None:
        if self.op_state not in allowed:
            raise TdxError(TdxStatus.OP_STATE_INCORRECT, f"{leaf} in OP_STATE {self.op_state.name}")

    def require_lifecycle(self, leaf: str, *allowed: TdLifecycle) -> None:
        if self.lifecycle not in allowed:
            raise TdxError(
                TdxStatus.LIFECYCLE_STATE_INCORRECT | OperandId.TDR,
                f"{leaf} in lifecycle {self.lifecycle.name}",
            )


@dataclass(frozen=True)
class SeamIdentity:
    """What the TDX module reports about itself in TEE_TCB_INFO and REPORTMACSTRUCT
    (docs/memory-model.md §8). The host platform fills it from the simulated PKI's platform
    identity so that quotes match the signed TCB Info."""

    cpu_svn: bytes = bytes(16)
    tee_tcb_svn: bytes = bytes([3, 1]) + bytes(14)
    tee_tcb_svn2: bytes = bytes(16)
    mr_seam: bytes = bytes(MR_SIZE)
    mr_signer_seam: bytes = bytes(MR_SIZE)
    seam_attributes: bytes = bytes(8)
    #: TEE_TCB_INFO.VALID: which of its fields are valid.
    tee_tcb_info_valid: bytes = bytes.fromhex("ff01000000000000")
