"""The Intel SGX PCK certificate extension (OID 1.2.840.113741.1.13.1), DER-encoded as Intel's PCK leaves are.

attestation.md §6. The value is a SEQUENCE of (OID, value) pairs in this order, each pair a SEQUENCE:

- ``.1`` PPID, OCTET STRING (16);
- ``.2`` TCB, a SEQUENCE of 18 (OID, value) pairs: ``.2.1``–``.2.16`` component SVNs (INTEGER), ``.2.17``
  PCESVN (INTEGER), ``.2.18`` CPUSVN (OCTET STRING 16);
- ``.3`` PCE-ID, OCTET STRING (2); ``.4`` FMSPC, OCTET STRING (6); ``.5`` SGX type, ENUMERATED;
- for Scalable platforms (certificates of the Platform CA with SGX type 1/2) also ``.6`` PlatformInstanceID,
  OCTET STRING (16), and ``.7`` Configuration, a SEQUENCE of ``.7.1`` dynamicPlatform, ``.7.2`` cachedKeys,
  ``.7.3`` SMTEnabled (BOOLEAN).

The model is ``attest.verify.pck.PckExtension`` (the decoder's), so what is encoded here decodes to the same
value. Byte layout checked against the PCK leaves inside the real vectors' certification data (tests).
"""

from __future__ import annotations

from attest.pki import der
from attest.verify.pck import (
    OID_CACHED_KEYS,
    OID_CONFIGURATION,
    OID_CPUSVN,
    OID_DYNAMIC_PLATFORM,
    OID_FMSPC,
    OID_PCEID,
    OID_PCESVN,
    OID_PLATFORM_INSTANCE_ID,
    OID_PPID,
    OID_SGX_TYPE,
    OID_SMT_ENABLED,
    OID_TCB,
    PckConfiguration,
    PckExtension,
)

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
