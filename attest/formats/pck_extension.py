"""PCK certificate SGX extension (OID 1.2.840.113741.1.13.1), docs/attestation.md §6.

Parses PPID, the 16 TCB component SVNs with PCESVN and CPUSVN, PCEID, FMSPC, SGX type, and the optional
PlatformInstanceID / Configuration of Platform-CA-issued certificates. ``PckExtension`` is the one model of
the extension: this module decodes into it and encodes it (the simulated PCS's leaves), so
``parse_sgx_extension(encode_sgx_extension(x)) == x``. The encoded order: each (OID, value) pair a SEQUENCE,
``.1`` PPID, ``.2`` TCB (16 component SVNs, PCESVN, CPUSVN), ``.3`` PCE-ID, ``.4`` FMSPC, ``.5`` SGX type,
then ``.6`` PlatformInstanceID and ``.7`` Configuration for Scalable platforms.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from attest.errors import CertificateChainError
from attest.formats import der, x509_input

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


OID_DYNAMIC_PLATFORM = OID_CONFIGURATION + ".1"
OID_CACHED_KEYS = OID_CONFIGURATION + ".2"
OID_SMT_ENABLED = OID_CONFIGURATION + ".3"


@dataclass(frozen=True)
class PckConfiguration:
    """The Configuration item (``.7``) of Scalable platforms; each flag None when the certificate omits it."""

    dynamic_platform: bool | None = None
    cached_keys: bool | None = None
    smt_enabled: bool | None = None

    def items(self) -> tuple[tuple[str, bool], ...]:
        """The flags present, as ``(name, value)`` in extension order."""
        flags = (
            ("dynamic_platform", self.dynamic_platform),
            ("cached_keys", self.cached_keys),
            ("smt_enabled", self.smt_enabled),
        )
        return tuple((name, value) for name, value in flags if value is not None)


@dataclass(frozen=True)
class PckExtension:
    """The platform identity and TCB a PCK certificate vouches for.

    Construction checks sizes and ranges (``ValueError``); the decoder checks the same before constructing, so
    malformed certificates surface as ``CertificateChainError`` there.
    """

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs (.2.1–.2.16)
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int  # SGX_TYPES
    platform_instance_id: bytes | None = None
    configuration: PckConfiguration | None = None

    def __post_init__(self) -> None:
        sizes = {"ppid": 16, "cpu_svn": 16, "pce_id": 2, "fmspc": 6}
        for name, size in sizes.items():
            if len(getattr(self, name)) != size:
                raise ValueError(f"{name} must be {size} bytes")
        if len(self.tcb_components) != TCB_COMPONENT_COUNT or not all(
            0 <= c <= 255 for c in self.tcb_components
        ):
            raise ValueError("tcb_components must be 16 values in 0..255")
        if not 0 <= self.pce_svn <= 0xFFFF:
            raise ValueError("pce_svn must be in 0..65535")
        if self.sgx_type not in SGX_TYPES:
            raise ValueError("sgx_type must be 0 (Standard), 1 (Scalable) or 2 (Scalable with Integrity)")
        if self.platform_instance_id is not None and len(self.platform_instance_id) != 16:
            raise ValueError("platform_instance_id must be 16 bytes")


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
    config: PckConfiguration | None = None
    if OID_CONFIGURATION in items and items[OID_CONFIGURATION].tag == der.TAG_SEQUENCE:
        flags = {
            oid: tlv.value != b"\x00"
            for oid, tlv in der.oid_value_pairs(items[OID_CONFIGURATION].value)
            if tlv.tag == der.TAG_BOOLEAN and len(tlv.value) == 1
        }
        config = PckConfiguration(
            dynamic_platform=flags.get(OID_DYNAMIC_PLATFORM),
            cached_keys=flags.get(OID_CACHED_KEYS),
            smt_enabled=flags.get(OID_SMT_ENABLED),
        )
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
        configuration=config,
    )


def pck_extension_of(cert: x509.Certificate) -> PckExtension:
    """The SGX extension of a PCK leaf certificate."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise CertificateChainError("pck certificate has no sgx extension") from None
    except x509_input.MALFORMED as exc:
        raise CertificateChainError(f"malformed pck certificate extensions: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CertificateChainError("malformed sgx extension")
    return parse_sgx_extension(value.value)


SCALABLE_CONFIGURATION = PckConfiguration(dynamic_platform=True, cached_keys=True, smt_enabled=True)
"""What the simulated PCS puts in ``.7`` of Scalable platforms (the values Intel's Scalable leaves carry)."""


def encode_sgx_extension(ext: PckExtension) -> bytes:
    """The DER of the extension value (the OCTET STRING content of the X.509 extension)."""
    tcb_items = [
        der.sequence(der.oid(f"{OID_TCB}.{i + 1}"), der.integer(svn))
        for i, svn in enumerate(ext.tcb_components)
    ]
    tcb_items.append(der.sequence(der.oid(OID_PCESVN), der.integer(ext.pce_svn)))
    tcb_items.append(der.sequence(der.oid(OID_CPUSVN), der.octets(ext.cpu_svn)))
    items = [
        der.sequence(der.oid(OID_PPID), der.octets(ext.ppid)),
        der.sequence(der.oid(OID_TCB), der.sequence(*tcb_items)),
        der.sequence(der.oid(OID_PCEID), der.octets(ext.pce_id)),
        der.sequence(der.oid(OID_FMSPC), der.octets(ext.fmspc)),
        der.sequence(der.oid(OID_SGX_TYPE), der.enumerated(ext.sgx_type)),
    ]
    if ext.platform_instance_id is not None:
        items.append(der.sequence(der.oid(OID_PLATFORM_INSTANCE_ID), der.octets(ext.platform_instance_id)))
    if ext.configuration is not None:
        oids = {
            "dynamic_platform": OID_DYNAMIC_PLATFORM,
            "cached_keys": OID_CACHED_KEYS,
            "smt_enabled": OID_SMT_ENABLED,
        }
        flags = [
            der.sequence(der.oid(oids[name]), der.boolean(value)) for name, value in ext.configuration.items()
        ]
        items.append(der.sequence(der.oid(OID_CONFIGURATION), der.sequence(*flags)))
    return der.sequence(*items)
