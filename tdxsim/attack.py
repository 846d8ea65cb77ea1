"""``tdxsim attack``: host-side and physical attacks against a live TD, each beside what real TDX guarantees.

Every row is one attack run against a TD on a real host process: host userspace reading, writing, mapping and
resizing private memory (guest_memfd refuses each; the legacy world of host-mapped private memory gives zeros,
poison and a host machine check), the host kernel storing with the shared KeyID, a physical attacker reading
DRAM, splicing and replaying ciphertext, the host converting or removing a TD's page behind its back, the host
forging a TDREPORT, and replayed or borrowed attestation evidence. Each row says what real TDX does (with the
source), what the simulator did and whether they agree (docs/memory-model.md §1.2, §7.2; docs/attestation.md).

Without ``--host`` it starts what it needs and stops all of it afterwards (also on Ctrl-C): a simulated Intel
PCS (``tdxsim pki init``), a host provisioned from it, a host in legacy memory mode and a verifier. With
``--host`` it launches its own TDs on that host with the admin credential and runs the rows its memory mode
allows; the attestation rows need ``--verifier`` as well (and a host started with ``--pki``). The legacy rows
end with a host machine check: the legacy host exits.

Exit status: 0 every row that ran agrees, 1 some row disagrees, 2 unusable options or a process that would not
start, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric import ec

from attest.formats import binding
from guest.errors import GuestError
from guest.td import Td
from tdxsim.soak import Processes, Server
from wire import credentials
from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, attestation_pb2_grpc, host_pb2, host_pb2_grpc

PAGE = 4096
LINE = 64
MIB = 1 << 20
TD_MEMORY = 16 * MIB
KERNEL_GPA = MIB
#: TD attributes with SEPT_VE_DISABLE clear: touching an unaccepted page is a #VE the guest sees, not death.
VE_ATTRIBUTES = 0
#: REPORTDATA's offset in TDREPORT_STRUCT (inside REPORTMACSTRUCT, which the MAC covers).
REPORTDATA_OFFSET = 128
TIMEOUT = 30.0
DRAM = host_pb2.PHYSICAL_PATH_DRAM
HOST_KEYID = host_pb2.PHYSICAL_PATH_HOST_KEYID

GMEM_SOURCE = (
    "Linux virt/kvm/guest_memfd.c (kvm_gmem_fops, kvm_gmem_mmap, kvm_gmem_setattr); docs/memory-model.md §1.2"
)
LEGACY_SOURCE = (
    "Intel TDX Module Base Architecture Spec, memory integrity (TD-owner bit, poison, #MC); "
    "Christopherson, fd-based private memory RFC (2021); docs/memory-model.md §3, §7"
)
TME_SOURCE = (
    "Intel TDX Module Base Architecture Spec, memory confidentiality and integrity (AES-XTS, Ci MAC); "
)
REPLAY_SOURCE = (
    "Cheng et al., 'Intel TDX Demystified', ACM Computing Surveys 2024 (no replay protection); "
    "docs/memory-model.md §7.2"
)
SEPT_SOURCE = "Intel TDX Module Base Architecture Spec, Secure-EPT (TDH.MEM.PAGE.REMOVE, AUG, PENDING, #VE); "


@dataclass
class Row:
    id: str
    attack: str
    tdx_guarantee: str
    source: str
    observed: str = "not run"
    agrees: bool | None = None
    outcome: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attack": self.attack,
            "tdx_guarantee": self.tdx_guarantee,
            "source": self.source,
            "observed": self.observed,
            "agrees": self.agrees,
            "outcome": self.outcome,
        }


def catalogue() -> list[Row]:
    """Every row, in the order they run, with what real TDX guarantees."""
    gmem = "gmem: refused"
    return [
        Row(
            "gmem-read",
            "host userspace reads private memory: read(2) on the guest_memfd, and its own mapping",
            f"{gmem}: the guest_memfd has no read operation (EINVAL) and private memory is never mapped",
            GMEM_SOURCE,
        ),
        Row(
            "gmem-write",
            "host userspace writes private memory: write(2) on the guest_memfd, and its own mapping",
            f"{gmem}: no write operation (EINVAL); the TD's data stays intact",
            GMEM_SOURCE,
        ),
        Row("gmem-mmap", "host userspace mmap(2)s the guest_memfd", f"{gmem}: ENODEV", GMEM_SOURCE),
        Row("gmem-resize", "host userspace ftruncate(2)s the guest_memfd", f"{gmem}: EINVAL", GMEM_SOURCE),
        Row(
            "legacy-read",
            "legacy (private memory mapped by the host): host userspace reads a TD-owned line",
            "legacy: reads return zeros, never ciphertext or plaintext (TD-owner bit)",
            LEGACY_SOURCE,
        ),
        Row(
            "legacy-write",
            "legacy: host userspace writes a TD-owned line",
            "legacy: not detected at the time; the line's TD-owner bit clears and the TD's next read "
            "consumes poison: a TD machine check, the TD dies",
            LEGACY_SOURCE,
        ),
        Row(
            "legacy-host-read-poison",
            "legacy: host userspace reads the poisoned line back",
            "legacy: the host consumes poison: a host machine check takes the machine down",
            LEGACY_SOURCE,
        ),
        Row(
            "kernel-write-shared-keyid",
            "the host kernel stores to a TD's private page with the shared KeyID 0",
            "the owner bit / MAC no longer match: the TD's next read is a machine check and the TD dies; "
            "the host never reads the line (gmem), so it survives",
            TME_SOURCE + "docs/memory-model.md §7",
        ),
        Row(
            "dram-read",
            "physical attacker reads DRAM (cold boot, bus interposer)",
            "ciphertext only for private pages, and the same plaintext at two addresses gives different "
            "ciphertext (the AES-XTS tweak is the address); shared pages are the host's anyway",
            TME_SOURCE + "docs/memory-model.md §7.2",
        ),
        Row(
            "dram-swap",
            "physical attacker swaps the ciphertext (and MACs) of two private pages",
            "detected: the MAC covers the address (and the tweak decrypts to garbage): the TD's next read "
            "is a machine check",
            TME_SOURCE + "docs/memory-model.md §7.2",
        ),
        Row(
            "dram-replay",
            "physical attacker puts back old ciphertext and its old MAC at the same address",
            "NOT detected: TDX has no replay protection for memory; the TD silently reads the old data",
            REPLAY_SOURCE,
        ),
        Row(
            "unrequested-conversion",
            "the host converts a private page to shared the guest never asked to convert",
            "the guest's next private access exits (memory fault), the page comes back unaccepted: the guest "
            "sees a #VE (or dies with SEPT_VE_DISABLE), and the old data is gone once it accepts again",
            SEPT_SOURCE
            + "Linux Documentation/virt/kvm/api.rst KVM_EXIT_MEMORY_FAULT; docs/memory-model.md §2",
        ),
        Row(
            "page-removal",
            "the host removes a private page behind the TD's back (PUNCH_HOLE on the guest_memfd)",
            "the next access is a pending-page fault (#VE, or death with SEPT_VE_DISABLE), never stale data; "
            "after ACCEPT the page is zeros",
            SEPT_SOURCE + "docs/memory-model.md §6.4",
        ),
        Row(
            "forged-tdreport",
            "the host hands the quoting enclave a TDREPORT it altered (REPORTDATA changed)",
            "refused: the TDREPORT MAC is bound to the platform and checked (EVERIFYREPORT2) before a quote",
            "Intel TDX Module ABI Spec (TDG.MR.REPORT, REPORTMACSTRUCT); Intel DCAP quoting enclave; "
            "docs/attestation.md",
        ),
        Row(
            "quote-replay",
            "an old quote and its nonce are presented to the verifier again",
            "refused: nonces are single-use (the verifier's freshness check)",
            "IETF RATS RFC 9334 (freshness); docs/attestation.md §11",
        ),
        Row(
            "quote-other-td",
            "a quote from another TD is presented with this TD's key",
            "refused: REPORTDATA binds the quote to the nonce and the TD's own key",
            "docs/attestation.md §11 (REPORTDATA binding, as trustee's KBS)",
        ),
    ]


# ---- outcomes ----------------------------------------------------------------------------------------------


def status_of(call: Callable[[], Any]) -> tuple[str, str, Any]:
    """(code name, reason, result) of a call: ("OK", "", result) or the refusal's gRPC code and reason."""
    try:
        return "OK", "", call()
    except grpc.RpcError as err:
        info = error_info(err)
        return err.code().name, info.reason if info is not None else "", None
    except GuestError as err:
        return err.code or "GUEST_ERROR", err.reason, None


def describe(code: str, reason: str) -> str:
    return "OK" if code == "OK" else f"{code} {reason}".strip()


# ---- the lab: hosts, verifier, TDs -------------------------------------------------------------------------


@dataclass
class HostRef:
    address: str
    admin: str
    proc: subprocess.Popen[str] | None = None

    @contextmanager
    def stub(self) -> Iterator[Any]:
        with grpc.insecure_channel(self.address) as channel:
            yield host_pb2_grpc.HostServiceStub(credentials.with_bearer(channel, self.admin))

    def td(self, name: str, attributes: int | None = None) -> Td:
        image = host_pb2.TdImage(
            memory_bytes=TD_MEMORY,
            payload=[
                host_pb2.Payload(gpa=KERNEL_GPA, data=b"tdxsim attack target".ljust(PAGE), measure=True)
            ],
        )
        if attributes is not None:
            image.attributes = attributes
        td, _ = Td.launch(self.address, image, name=name, admin_credential=self.admin, timeout=TIMEOUT)
        return td


@dataclass
class Lab:
    gmem: HostRef | None
    legacy: HostRef | None
    verifier: str | None


def _secret(label: str) -> bytes:
    return f"attack target secret: {label}".encode().ljust(LINE, b".")


def _private_td(host: HostRef, name: str, attributes: int | None = None) -> tuple[Td, bytes]:
    """A TD that accepted its first two pages and wrote a secret line at GPA 0."""
    td = host.td(name, attributes)
    secret = _secret(name)
    td.accept(0, 2 * PAGE)
    td.write(0, secret)
    return td, secret


def _at(td: Td, gpa: int) -> host_pb2.TdGpa:
    return host_pb2.TdGpa(td_id=td.td_id, gpa=gpa)


# ---- the rows ----------------------------------------------------------------------------------------------


def run_gmem_file_rows(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    td, secret = _private_td(lab.gmem, "attack-gmem")
    with td, lab.gmem.stub() as host:
        gmem_fd = _guest_memfd(host, td)
        attempts: dict[str, tuple[Callable[[], Any], Callable[[], Any] | None]] = {
            "gmem-read": (
                lambda: host.GuestMemfdRead(
                    host_pb2.GuestMemfdReadRequest(td_id=td.td_id, fd=gmem_fd, length=PAGE), timeout=TIMEOUT
                ),
                lambda: host.HostRead(
                    host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=LINE), timeout=TIMEOUT
                ),
            ),
            "gmem-write": (
                lambda: host.GuestMemfdWrite(
                    host_pb2.GuestMemfdWriteRequest(td_id=td.td_id, fd=gmem_fd, data=bytes(LINE)),
                    timeout=TIMEOUT,
                ),
                lambda: host.HostWrite(
                    host_pb2.HostWriteRequest(td_id=td.td_id, gpa=0, data=bytes(LINE)), timeout=TIMEOUT
                ),
            ),
            "gmem-mmap": (
                lambda: host.GuestMemfdMmap(
                    host_pb2.GuestMemfdMmapRequest(td_id=td.td_id, fd=gmem_fd, length=PAGE), timeout=TIMEOUT
                ),
                None,
            ),
            "gmem-resize": (
                lambda: host.GuestMemfdFtruncate(
                    host_pb2.GuestMemfdFtruncateRequest(td_id=td.td_id, fd=gmem_fd, length=2 * TD_MEMORY),
                    timeout=TIMEOUT,
                ),
                None,
            ),
        }
        expected = {
            "gmem-read": "EINVAL",
            "gmem-write": "EINVAL",
            "gmem-mmap": "ENODEV",
            "gmem-resize": "EINVAL",
        }
        for row_id, (file_op, mapping_op) in attempts.items():
            code, reason, _ = status_of(file_op)
            outcome: dict[str, Any] = {"code": code, "errno": reason}
            observed = f"{describe(code, reason)} on guest_memfd {gmem_fd}"
            refused_mapping = True
            if mapping_op is not None:
                m_code, m_reason, _ = status_of(mapping_op)
                outcome["host_mapping"] = m_reason or m_code
                observed += f"; through the host's mapping: {describe(m_code, m_reason)}"
                refused_mapping = (
                    m_code == "PERMISSION_DENIED" and m_reason == "PRIVATE_MEMORY_NOT_ACCESSIBLE"
                )
            intact = td.read(0, LINE) == secret
            outcome["td_data_intact"] = intact
            observed += "; the TD's data is intact" if intact else "; THE TD'S DATA CHANGED"
            row = rows[row_id]
            row.observed, row.outcome = observed, outcome
            row.agrees = reason == expected[row_id] and refused_mapping and intact


def _guest_memfd(host: Any, td: Td) -> int:
    """The TD's guest_memfd: the one backing memslot 0 (GetGpaMap lists the memslots)."""
    reply = host.GetGpaMap(host_pb2.GetGpaMapRequest(td_id=td.td_id, max_runs=1), timeout=TIMEOUT)
    return int(reply.memslots[0].guest_memfd)


def run_legacy_rows(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.legacy is not None
    td, secret = _private_td(lab.legacy, "attack-legacy")
    with td, lab.legacy.stub() as host:
        read = host.HostRead(
            host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=LINE), timeout=TIMEOUT
        ).data
        row = rows["legacy-read"]
        zeros = read == bytes(LINE)
        row.outcome = {"data_is_zeros": zeros, "contains_secret": secret in read}
        row.observed = "the host read zeros" if zeros else f"the host read {read[:16].hex()}…"
        row.agrees = zeros
        code, reason, _ = status_of(
            lambda: host.HostWrite(
                host_pb2.HostWriteRequest(td_id=td.td_id, gpa=0, data=b"host was here"), timeout=TIMEOUT
            )
        )
        t_code, t_reason, _ = status_of(lambda: td.read(0, LINE))
        row = rows["legacy-write"]
        row.outcome = {"host_write": code, "td_read": t_reason or t_code}
        row.observed = (
            f"host write: {describe(code, reason)}; the TD's next read: {describe(t_code, t_reason)}"
        )
        row.agrees = code == "OK" and t_reason == "TD_MACHINE_CHECK"
        h_code, h_reason, _ = status_of(
            lambda: host.HostRead(
                host_pb2.HostReadRequest(td_id=td.td_id, gpa=0, length=LINE), timeout=TIMEOUT
            )
        )
        exit_status = None
        if lab.legacy.proc is not None:
            try:
                exit_status = lab.legacy.proc.wait(15)
            except subprocess.TimeoutExpired:
                exit_status = None
        row = rows["legacy-host-read-poison"]
        row.outcome = {"host_read": h_reason or h_code, "host_exit": exit_status}
        row.observed = f"host read: {describe(h_code, h_reason)}" + (
            f"; the host process exited with status {exit_status}" if exit_status is not None else ""
        )
        row.agrees = h_reason == "HOST_MACHINE_CHECK" and exit_status in (None, 3)


def run_kernel_write_row(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    victim, _ = _private_td(lab.gmem, "attack-kernel-victim")
    bystander, b_secret = _private_td(lab.gmem, "attack-kernel-bystander")
    with victim, bystander, lab.gmem.stub() as host:
        code, reason, _ = status_of(
            lambda: host.PhysicalWrite(
                host_pb2.PhysicalWriteRequest(path=HOST_KEYID, td_gpa=_at(victim, 0), data=bytes(LINE)),
                timeout=TIMEOUT,
            )
        )
        t_code, t_reason, _ = status_of(lambda: victim.read(0, LINE))
        alive_code, _, _ = status_of(lambda: host.GetStats(host_pb2.GetStatsRequest(), timeout=TIMEOUT))
        other_ok = bystander.read(0, LINE) == b_secret
        row = rows["kernel-write-shared-keyid"]
        row.outcome = {
            "kernel_write": code,
            "td_read": t_reason or t_code,
            "host_alive": alive_code == "OK",
            "other_td_ok": other_ok,
        }
        row.observed = (
            f"the store: {describe(code, reason)}; the TD's next read: {describe(t_code, t_reason)}; "
            f"host {'alive' if alive_code == 'OK' else 'DOWN'}, "
            f"another TD {'unharmed' if other_ok else 'HARMED'}"
        )
        row.agrees = code == "OK" and t_reason == "TD_MACHINE_CHECK" and alive_code == "OK" and other_ok


def _dram(host: Any, td: Td, gpa: int, length: int = LINE) -> Any:
    return host.PhysicalRead(
        host_pb2.PhysicalReadRequest(path=DRAM, td_gpa=_at(td, gpa), length=length), timeout=TIMEOUT
    )


def run_dram_read_row(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    with lab.gmem.td("attack-dram-read") as td, lab.gmem.stub() as host:
        secret = _secret("same plaintext, two addresses")
        td.accept(0, 2 * PAGE)
        td.write_many([(0, secret), (PAGE, secret)])
        td.convert_to_shared(2 * MIB, PAGE)
        td.write(td.shared(2 * MIB), secret)
        first, second, shared = _dram(host, td, 0), _dram(host, td, PAGE), _dram(host, td, 2 * MIB)
        row = rows["dram-read"]
        differs = first.data != second.data
        leaked = secret in first.data or secret in second.data
        row.outcome = {
            "private_ciphertexts_differ": differs,
            "plaintext_in_private_dram": leaked,
            "plaintext_in_shared_dram": shared.data == secret,
            "macs_per_line": len(first.macs),
        }
        row.observed = (
            f"private GPA 0x0 at PA 0x{first.pa:x}: {first.data[:8].hex()}…, "
            f"GPA 0x1000 at PA 0x{second.pa:x}: "
            f"{second.data[:8].hex()}… ({'different' if differs else 'EQUAL'} ciphertext, "
            f"{'PLAINTEXT VISIBLE' if leaked else 'no plaintext'}); the shared page holds "
            f"{'the plaintext' if shared.data == secret else 'something else'}"
        )
        row.agrees = differs and not leaked and shared.data == secret


def run_dram_splice_rows(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    with lab.gmem.stub() as host:
        td, _ = _private_td(lab.gmem, "attack-dram-replay")
        with td:
            old_value = b"balance: 100".ljust(LINE)
            td.write(0, old_value)
            old = _dram(host, td, 0)
            td.write(0, b"balance: 0".ljust(LINE))
            host.PhysicalWrite(
                host_pb2.PhysicalWriteRequest(path=DRAM, td_gpa=_at(td, 0), data=old.data, macs=old.macs),
                timeout=TIMEOUT,
            )
            code, reason, seen = status_of(lambda: td.read(0, LINE))
            row = rows["dram-replay"]
            stale = seen == old_value
            row.outcome = {"td_read": reason or code, "td_sees_old_value": stale}
            row.observed = (
                "the TD read the replayed old value without any fault: NOT detected"
                if stale
                else f"the TD's read: {describe(code, reason)}"
            )
            row.agrees = code == "OK" and stale
        td, secret = _private_td(lab.gmem, "attack-dram-swap")
        integrity = host.GetStats(host_pb2.GetStatsRequest(), timeout=TIMEOUT).integrity
        with td:
            other = _secret("the other page")
            td.write(PAGE, other)
            a, b = _dram(host, td, 0), _dram(host, td, PAGE)
            for gpa, line in ((0, b), (PAGE, a)):
                host.PhysicalWrite(
                    host_pb2.PhysicalWriteRequest(
                        path=DRAM, td_gpa=_at(td, gpa), data=line.data, macs=line.macs
                    ),
                    timeout=TIMEOUT,
                )
            code, reason, seen = status_of(lambda: td.read(0, LINE))
            row = rows["dram-swap"]
            row.outcome = {
                "td_read": reason or code,
                "integrity": integrity,
                "moved_plaintext": seen == other,
            }
            row.observed = f"the TD's next read: {describe(code, reason)}"
            if integrity:
                row.agrees = reason == "TD_MACHINE_CHECK"
            else:  # Li mode: no MAC; the address tweak turns the moved ciphertext into garbage, undetected
                row.tdx_guarantee = (
                    "without integrity (Li mode): not detected, but the address tweak makes the moved "
                    "ciphertext decrypt to garbage, never the other page's data"
                )
                row.observed += " (garbage)" if code == "OK" and seen not in (other, secret) else ""
                row.agrees = code == "OK" and seen not in (other, secret)


def run_conversion_rows(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    with lab.gmem.stub() as host:
        td, secret = _private_td(lab.gmem, "attack-conversion", VE_ATTRIBUTES)
        with td:
            before = host.GetStats(host_pb2.GetStatsRequest(), timeout=TIMEOUT).conversions
            host.SetMemoryAttributes(
                host_pb2.SetMemoryAttributesRequest(td_id=td.td_id, address=0, size=PAGE, attributes=0),
                timeout=TIMEOUT,
            )
            code, reason, _ = status_of(lambda: td.read(0, LINE))
            after = host.GetStats(host_pb2.GetStatsRequest(), timeout=TIMEOUT).conversions
            td.accept(0, PAGE)
            again = td.read(0, LINE)
            row = rows["unrequested-conversion"]
            row.outcome = {
                "memory_fault_conversions": after - before,
                "td_read": reason or code,
                "after_accept": "zeros"
                if again == bytes(LINE)
                else ("secret" if again == secret else "other"),
            }
            row.observed = (
                f"the TD's read exited to the VMM ({after - before} conversion back to private), then "
                f"{describe(code, reason)}; after ACCEPT the page reads "
                f"{'zeros: the data is gone' if again == bytes(LINE) else 'its old data'}"
            )
            row.agrees = after > before and reason == "VE_PENDING_PAGE" and again == bytes(LINE)
        td, secret = _private_td(lab.gmem, "attack-removal", VE_ATTRIBUTES)
        with td:
            fd = _guest_memfd(host, td)
            host.Fallocate(
                host_pb2.FallocateRequest(td_id=td.td_id, fd=fd, mode=3, offset=0, len=PAGE), timeout=TIMEOUT
            )
            code, reason, seen = status_of(lambda: td.read(0, LINE))
            td.accept(0, PAGE)
            again = td.read(0, LINE)
            row = rows["page-removal"]
            row.outcome = {
                "td_read": reason or code,
                "stale_data": seen == secret or again == secret,
                "after_accept": "zeros" if again == bytes(LINE) else "other",
            }
            row.observed = f"the TD's next read: {describe(code, reason)}; after ACCEPT: " + (
                "zeros" if again == bytes(LINE) else again[:16].hex()
            )
            row.agrees = reason == "VE_PENDING_PAGE" and again == bytes(LINE)


def run_attestation_rows(lab: Lab, rows: dict[str, Row]) -> None:
    assert lab.gmem is not None
    with lab.gmem.td("attack-quote-a") as td_a, lab.gmem.td("attack-quote-b") as td_b:
        genuine = td_a.report(bytes(64))
        forged = bytearray(genuine)
        forged[REPORTDATA_OFFSET] ^= 0xFF
        g_code, g_reason, _ = status_of(lambda: td_a.quote_tdreport(genuine))
        code, reason, _ = status_of(lambda: td_a.quote_tdreport(bytes(forged)))
        row = rows["forged-tdreport"]
        row.outcome = {"genuine": g_reason or g_code, "forged": reason or code}
        row.observed = (
            f"genuine TDREPORT: {describe(g_code, g_reason)}; altered one: {describe(code, reason)}"
        )
        if g_reason == "QGS_UNAVAILABLE":
            row.observed, row.agrees = "not run: the host has no quoting enclave (start it with --pki)", None
            return
        row.agrees = g_code == "OK" and reason == "GET_QUOTE_ERROR"
        if lab.verifier is None:
            for row_id in ("quote-replay", "quote-other-td"):
                rows[row_id].observed = "not run: needs --verifier"
            return
        with grpc.insecure_channel(lab.verifier) as channel:
            verifier = attestation_pb2_grpc.VerifierServiceStub(channel)

            def evidence(td: Td) -> tuple[bytes, bytes, bytes, bytes]:
                nonce = verifier.GetNonce(attestation_pb2.GetNonceRequest(), timeout=TIMEOUT).nonce
                spki = binding.spki_der(ec.generate_private_key(ec.SECP256R1()).public_key())
                return td.quote(binding.report_data(nonce, spki)), td.event_log(), nonce, spki

            def attest(quote: bytes, log: bytes, nonce: bytes, spki: bytes) -> Any:
                request = attestation_pb2.AttestRequest(
                    quote=quote, event_log=log, nonce=nonce, tee_public_key=spki
                )
                return verifier.Attest(request, timeout=TIMEOUT)

            quote, log, nonce, spki = evidence(td_a)
            first, first_reason, _ = status_of(lambda: attest(quote, log, nonce, spki))
            again, again_reason, _ = status_of(lambda: attest(quote, log, nonce, spki))
            row = rows["quote-replay"]
            row.outcome = {"first": first_reason or first, "replay": again_reason or again}
            row.observed = (
                f"first Attest: {describe(first, first_reason)}; "
                f"the same again: {describe(again, again_reason)}"
            )
            row.agrees = first == "OK" and again_reason == "NONCE_REPLAYED"
            _, _, nonce_a, spki_a = evidence(td_a)
            quote_b, log_b, _, _ = evidence(td_b)
            code, reason, _ = status_of(lambda: attest(quote_b, log_b, nonce_a, spki_a))
            row = rows["quote-other-td"]
            row.outcome = {"attest": reason or code}
            row.observed = (
                f"TD {td_b.td_id}'s quote with TD {td_a.td_id}'s nonce and key: {describe(code, reason)}"
            )
            row.agrees = code == "PERMISSION_DENIED" and reason == "REPORT_DATA_MISMATCH"


NOT_RUN = "not run"
#: The steps in catalogue order: each runs a group of rows against one kind of host ("gmem", "legacy").
STEPS: tuple[tuple[Callable[[Lab, dict[str, Row]], None], str, tuple[str, ...]], ...] = (
    (run_gmem_file_rows, "gmem", ("gmem-read", "gmem-write", "gmem-mmap", "gmem-resize")),
    (run_legacy_rows, "legacy", ("legacy-read", "legacy-write", "legacy-host-read-poison")),
    (run_kernel_write_row, "gmem", ("kernel-write-shared-keyid",)),
    (run_dram_read_row, "gmem", ("dram-read",)),
    (run_dram_splice_rows, "gmem", ("dram-swap", "dram-replay")),
    (run_conversion_rows, "gmem", ("unrequested-conversion", "page-removal")),
    (run_attestation_rows, "gmem", ("forged-tdreport", "quote-replay", "quote-other-td")),
)


def run_catalogue(lab: Lab, emit: Callable[[Row], None]) -> list[Row]:
    """Run every row the lab allows, in catalogue order, emitting each group of rows as it completes."""
    rows = {row.id: row for row in catalogue()}
    for step, needs, group in STEPS:
        host = lab.gmem if needs == "gmem" else lab.legacy
        if host is None:
            for row_id in group:
                rows[row_id].observed = f"{NOT_RUN}: needs a host in {needs} memory mode"
        else:
            try:
                step(lab, rows)
            except (grpc.RpcError, GuestError) as err:
                for row_id in group:
                    row = rows[row_id]
                    if row.agrees is None and row.observed == NOT_RUN:
                        row.observed = f"the attack could not be carried out: {_error_text(err)}"
                        row.agrees = False
        for row_id in group:
            emit(rows[row_id])
    return list(rows.values())


def _error_text(err: grpc.RpcError | GuestError) -> str:
    if isinstance(err, GuestError):
        return str(err)
    info = error_info(err)
    return f"{err.code().name} {info.reason if info else ''}: {err.details()}"


# ---- output ------------------------------------------------------------------------------------------------


def format_row(row: Row, width: int = 100) -> str:
    mark = {True: "agrees ", False: "DIFFERS", None: "skipped"}[row.agrees]
    wrap = textwrap.TextWrapper(width=width, initial_indent="    ", subsequent_indent="      ")
    lines = [f"[{mark}] {row.attack}"]
    lines += wrap.wrap(f"TDX:      {row.tdx_guarantee}")
    lines += wrap.wrap(f"source:   {row.source}")
    lines += wrap.wrap(f"observed: {row.observed}")
    return "\n".join(lines)


# ---- processes ---------------------------------------------------------------------------------------------


@contextmanager
def own_lab(work: Path) -> Iterator[Lab]:
    """A simulated PCS, a provisioned gmem host, a legacy host and a verifier, all stopped at the end."""
    processes = Processes(work)
    try:
        made = subprocess.run(
            [sys.executable, "-m", "tdxsim.cli", "pki", "init", str(work / "pki")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if made.returncode:
            raise RuntimeError(f"tdxsim pki init failed: {made.stderr.strip()}")
        pki = work / "pki"
        gmem = processes.start_server(
            "host", ["--listen", "127.0.0.1:0", "--phys-mem", "512M", "--pki", str(pki)]
        )
        legacy = processes.start_server(
            "host", ["--listen", "127.0.0.1:0", "--phys-mem", "256M", "--memory-mode", "legacy"]
        )
        verifier = processes.start_server(
            "verifier",
            [
                "--listen",
                "127.0.0.1:0",
                "--db",
                str(work / "verifier.db"),
                "--root",
                str(pki / "root_ca.pem"),
                "--collateral",
                str(pki / "collateral.json"),
            ],
        )
        yield Lab(_ref(gmem), _ref(legacy), verifier.address)
    finally:
        processes.stop_all()


def _ref(server: Server) -> HostRef:
    return HostRef(server.address, credentials.read_credential_file(server.admin_file), server.proc)


def _given_lab(args: argparse.Namespace) -> Lab:
    admin = credentials.client_admin_credential(args.admin_credential)
    ref = HostRef(args.host, admin)
    with grpc.insecure_channel(args.host) as channel:
        stub = host_pb2_grpc.HostServiceStub(credentials.with_bearer(channel, admin))
        mode = stub.GetStats(host_pb2.GetStatsRequest(), timeout=10, wait_for_ready=True).memory_mode
    if mode == "legacy":
        return Lab(None, ref, args.verifier)
    return Lab(ref, None, args.verifier)


# ---- command line ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per row and line")
    parser.add_argument(
        "--host",
        metavar="ADDR",
        help="attack TDs on this running host (launched with its admin credential) instead of starting a "
        "PCS, two hosts and a verifier; its memory mode decides which rows run",
    )
    parser.add_argument(
        "--verifier", metavar="ADDR", help="with --host: the verifier for the attestation rows (else skipped)"
    )
    credentials.add_client_argument(parser)


def run(args: argparse.Namespace) -> int:
    if args.verifier and not args.host:
        print("tdxsim attack: --verifier needs --host", file=sys.stderr)
        return 2
    rows: list[Row] = []

    def emit(row: Row) -> None:
        rows.append(row)
        if args.json:
            print(json.dumps(row.as_dict()), flush=True)
        else:
            print(format_row(row, min(shutil.get_terminal_size((100, 24)).columns, 120)) + "\n", flush=True)

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            if args.host:
                try:
                    lab = _given_lab(args)
                except credentials.CredentialError as err:
                    print(f"tdxsim attack: {err}", file=sys.stderr)
                    return 2
                except grpc.RpcError as err:
                    print(
                        f"tdxsim attack: host {args.host}: {err.code().name}: {err.details()}",
                        file=sys.stderr,
                    )
                    return 2
            else:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tdxsim-attack-")))
                try:
                    lab = stack.enter_context(own_lab(work))
                except RuntimeError as err:
                    print(f"tdxsim attack: {err}", file=sys.stderr)
                    return 2
            run_catalogue(lab, emit)
    except KeyboardInterrupt:
        print("tdxsim attack: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    line, status = verdict(rows)
    if not args.json:
        print(line)
    return status


def verdict(rows: list[Row]) -> tuple[str, int]:
    """The closing line and the exit status: 1 when an attack that ran disagrees with TDX, else 0
    (rows not run count for neither)."""
    ran = [row for row in rows if row.agrees is not None]
    differing = [row.id for row in ran if not row.agrees]
    line = f"{len(ran)} attacks run, {len(ran) - len(differing)} agree with TDX" + (
        f", {len(differing)} differ: {', '.join(differing)}" if differing else ""
    )
    return line, 1 if differing else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
