"""PCK certificate SGX extension (OID 1.2.840.113741.1.13.1), attestation.md §6.

Parses PPID, the 16 TCB component SVNs with PCESVN and CPUSVN, PCEID, FMSPC, SGX type, and the optional
PlatformInstanceID / Configuration of Platform-CA-issued certificates.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from attest.errors import CertificateChainError
from attest.verify import der

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
OID_PPID = SGX_EXTENSION_OID + ".1"
OID_TCB = SGX_EXTENSION_OID + ".2"
OID_PCESVN = OID_TCB + ".17"
OID_CPUSVN = OID_TCB + ".18"
OID_PCEID = SGX_EXTENSION_OID + ".3"
OID_FMSPC = SGX_EXTENSION_OID + ".4"
OID_SGX_TYPE = SGX_EXTENSION_OID + ".5"
OID_PLATFORM_INSTANCE_ID = SGX_EXTENSION_OID + ".6"
OID_CONFIGURATION = SGX_EXTENSION_OID + ".7"
TCB_COMPONENT_COUNT = 16
SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}


@dataclass(frozen=True)
class PckExtension:
    """The platform identity and TCB a PCK certificate vouches for."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs (.2.1–.2.16)
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: tuple[tuple[str, bool], ...] = ()


def _octets(tlv: der.Tlv, size: int, name: str) -> bytes:
    if tlv.tag != der.TAG_OCTET_STRING or len(tlv.value) != size:
        raise CertificateChainError(f"malformed sgx extension: {name} must be {size} octets")
    return tlv.value


def _svn(tlv: der.Tlv, name: str, maximum: int) -> int:
    if tlv.tag not in (der.TAG_INTEGER, der.TAG_ENUMERATED):
        raise CertificateChainError(f"malformed sgx extension: {name} is not an integer")
    value = der.decode_int(tlv.value)
    if not 0 <= value <= maximum:
        raise CertificateChainError(f"malformed sgx extension: {name} out of range")
    return value


def parse_sgx_extension(value: bytes) -> PckExtension:
    """Parse the DER content of the SGX extension; every mandatory item must be present exactly once."""
    items = dict(der.oid_value_pairs(der.read_one(value, der.TAG_SEQUENCE)))
    for oid in (OID_PPID, OID_TCB, OID_PCEID, OID_FMSPC, OID_SGX_TYPE):
        if oid not in items:
            raise CertificateChainError(f"malformed sgx extension: missing {oid}")
    tcb_tlv = items[OID_TCB]
    if tcb_tlv.tag != der.TAG_SEQUENCE:
        raise CertificateChainError("malformed sgx extension: tcb is not a sequence")
    tcb = dict(der.oid_value_pairs(tcb_tlv.value))
    components = tuple(
        _svn(tcb[f"{OID_TCB}.{i}"], f"tcb component {i}", 255) if f"{OID_TCB}.{i}" in tcb else -1
        for i in range(1, TCB_COMPONENT_COUNT + 1)
    )
    if -1 in components or OID_PCESVN not in tcb or OID_CPUSVN not in tcb:
        raise CertificateChainError("malformed sgx extension: incomplete tcb")
    config: list[tuple[str, bool]] = []
    if OID_CONFIGURATION in items and items[OID_CONFIGURATION].tag == der.TAG_SEQUENCE:
        names = {"1": "dynamic_platform", "2": "cached_keys", "3": "smt_enabled"}
        for oid, tlv in der.oid_value_pairs(items[OID_CONFIGURATION].value):
            name = names.get(oid.rsplit(".", 1)[-1])
            if name and tlv.tag == der.TAG_BOOLEAN and len(tlv.value) == 1:
                config.append((name, tlv.value != b"\x00"))
    pid = items.get(OID_PLATFORM_INSTANCE_ID)
    return PckExtension(
        ppid=_octets(items[OID_PPID], 16, "ppid"),
        tcb_components=components,
        pce_svn=_svn(tcb[OID_PCESVN], "pcesvn", 0xFFFF),
        cpu_svn=_octets(tcb[OID_CPUSVN], 16, "cpusvn"),
        pce_id=_octets(items[OID_PCEID], 2, "pceid"),
        fmspc=_octets(items[OID_FMSPC], 6, "fmspc"),
        sgx_type=_svn(items[OID_SGX_TYPE], "sgx type", 2),
        platform_instance_id=_octets(pid, 16, "platform instance id") if pid is not None else None,
        configuration=tuple(config),
    )


def pck_extension_of(cert: x509.Certificate) -> PckExtension:
    """The SGX extension of a PCK leaf certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise CertificateChainError("pck certificate has no sgx extension") from None
    except ValueError as exc:
        raise CertificateChainError(f"malformed pck certificate extensions: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateChainError("malformed sgx extension")
    return parse_sgx_extension(value.value)
