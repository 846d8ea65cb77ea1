"""Assembles one simulated TDX machine: memory controller, TDX module, host kernel and VMM.

The only place that holds both the trusted pieces and the untrusted ones; it hands KVM the
module's SEAMCALL interface and the KeyID-0 host bus, never the memory controller itself (docs/architecture.md
"Layers and the trust boundary").
"""

from __future__ import annotations

from dataclasses import dataclass

from attest.intel import QuotingEnclave, load_pck
from attest.intel.identity import seam_identity_fields
from host.kvm.kvm import Kvm
from host.kvm.pagealloc import PageAllocator
from host.kvm.usermem import AddressSpace
from host.qe.enclave import QuoteSigner, TdQuotingEnclave
from host.tdx.dram import format_size, max_phys_bytes
from host.tdx.hostbus import HostMemoryBus
from host.tdx.memctl import MemoryController
from host.tdx.module import TdxModule
from host.tdx.probe import DramProbe
from host.tdx.tdcs import SeamIdentity
from host.vmm.events import EventBus
from host.vmm.vmm import Vmm


@dataclass(frozen=True)
class PlatformConfig:
    phys_bytes: int = 4 << 30
    memory_mode: str = "gmem"  # or "legacy"
    integrity: bool = True
    keyid_first: int = 16
    keyid_count: int = 48
    #: A simulated PCS directory (``tdxsim pki init``) whose PCK this platform's QE signs with.
    pki_dir: str | None = None
    #: Which PCK leaf of that PCS is this platform's.
    pki_platform: int = 0
    #: Every Nth MapGPA chunk answers TDVMCALL RETRY (a pending vCPU event); 0 = never.
    map_gpa_retry_every: int = 0

    def check(self) -> None:
        if self.memory_mode not in ("gmem", "legacy"):
            raise ValueError(f"memory mode {self.memory_mode!r} is not 'gmem' or 'legacy'")
        if self.map_gpa_retry_every < 0:
            raise ValueError("map_gpa_retry_every must be >= 0")
        if self.phys_bytes < 16 << 20 or self.phys_bytes % 4096:
            raise ValueError("physical memory must be page-aligned and at least 16 MiB")
        keyid_bits = (self.keyid_first + self.keyid_count - 1).bit_length()
        if self.phys_bytes > max_phys_bytes(keyid_bits):
            raise ValueError(
                f"physical memory of {format_size(self.phys_bytes)} is more than the "
                f"{format_size(max_phys_bytes(keyid_bits))} that 52-bit physical addresses reach with "
                f"{keyid_bits} KeyID bits (docs/memory-model.md §7.1)"
            )


@dataclass
class Platform:
    config: PlatformConfig
    mc: MemoryController
    module: TdxModule
    vmm: Vmm
    quoting: TdQuotingEnclave


def build_platform(config: PlatformConfig | None = None, signer: QuoteSigner | None = None) -> Platform:
    """One machine; ``signer`` is the provisioned quote signer (None: GetQuote reports QGS
    unavailable)."""
    config = config or PlatformConfig()
    config.check()
    if signer is None and config.pki_dir is not None:
        signer = QuotingEnclave(*load_pck(config.pki_dir, config.pki_platform))
    mc = MemoryController(config.phys_bytes, integrity=config.integrity)
    # The module reports the simulated platform's SEAM identity, which the simulated PCS signs.
    seam = SeamIdentity(**seam_identity_fields())
    module = TdxModule(mc, keyid_first=config.keyid_first, keyid_count=config.keyid_count, seam=seam)
    # One memory controller, one lock: the module's private accesses and the host's KeyID-0 ones share it.
    bus = HostMemoryBus(mc, module.memory_lock)
    pages = PageAllocator(config.phys_bytes)
    mm = AddressSpace(bus, pages)
    legacy = config.memory_mode == "legacy"
    kvm = Kvm(module, bus, pages, mm, legacy=legacy, map_gpa_retry_every=config.map_gpa_retry_every)
    quoting = TdQuotingEnclave(module.verify_report, signer)
    # The DRAM probe is a physical attacker's, not the host's: it reaches the VMM only as an attack surface.
    dram = DramProbe(mc, module.memory_lock)
    vmm = Vmm(kvm, mm, EventBus(), legacy=legacy, quoting=quoting, dram=dram)
    return Platform(config, mc, module, vmm, quoting)
