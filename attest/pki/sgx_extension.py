"""The Intel SGX PCK certificate extension (OID 1.2.840.113741.1.13.1), DER-encoded as Intel's PCK leaves are.

attestation.md §6. The value is a SEQUENCE of (OID, value) pairs in this order, each pair a SEQUENCE:

- ``.1`` PPID, OCTET STRING (16);
- ``.2`` TCB, a SEQUENCE of 18 (OID, value) pairs: ``.2.1``–``.2.16`` component SVNs (INTEGER), ``.2.17``
  PCESVN (INTEGER), ``.2.18`` CPUSVN (OCTET STRING 16);
- ``.3`` PCE-ID, OCTET STRING (2); ``.4`` FMSPC, OCTET STRING (6); ``.5`` SGX type, ENUMERATED;
- for Scalable platforms (certificates of the Platform CA with SGX type 1/2) also ``.6`` PlatformInstanceID,
  OCTET STRING (16), and ``.7`` Configuration, a SEQUENCE of ``.7.1`` dynamicPlatform, ``.7.2`` cachedKeys,
  ``.7.3`` SMTEnabled (BOOLEAN).

Byte layout checked against the PCK leaves inside the real vectors' certification data (tests).
"""

from __future__ import annotations

from dataclasses import dataclass

from attest.pki import der

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
TCB_COMPONENT_COUNT = 16


@dataclass(frozen=True)
class SgxExtension:
    """What a PCK certificate vouches for: platform identity and its TCB."""

    ppid: bytes
    tcb_components: tuple[int, ...]
    pce_svn: int
    cpu_svn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int
    platform_instance_id: bytes | None = None
    dynamic_platform: bool = True
    cached_keys: bool = True
    smt_enabled: bool = True

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
        if self.sgx_type not in (0, 1, 2):
            raise ValueError("sgx_type must be 0 (Standard), 1 (Scalable) or 2 (Scalable with Integrity)")
        if self.platform_instance_id is not None and len(self.platform_instance_id) != 16:
            raise ValueError("platform_instance_id must be 16 bytes")

    def encode(self) -> bytes:
        """The DER of the extension value (the OCTET STRING content of the X.509 extension)."""
        base = SGX_EXTENSION_OID
        tcb = f"{base}.2"
        tcb_items = [
            der.sequence(der.oid(f"{tcb}.{i + 1}"), der.integer(svn))
            for i, svn in enumerate(self.tcb_components)
        ]
        tcb_items.append(der.sequence(der.oid(f"{tcb}.17"), der.integer(self.pce_svn)))
        tcb_items.append(der.sequence(der.oid(f"{tcb}.18"), der.octets(self.cpu_svn)))
        items = [
            der.sequence(der.oid(f"{base}.1"), der.octets(self.ppid)),
            der.sequence(der.oid(tcb), der.sequence(*tcb_items)),
            der.sequence(der.oid(f"{base}.3"), der.octets(self.pce_id)),
            der.sequence(der.oid(f"{base}.4"), der.octets(self.fmspc)),
            der.sequence(der.oid(f"{base}.5"), der.enumerated(self.sgx_type)),
        ]
        if self.platform_instance_id is not None:
            config = f"{base}.7"
            items.append(der.sequence(der.oid(f"{base}.6"), der.octets(self.platform_instance_id)))
            items.append(
                der.sequence(
                    der.oid(config),
                    der.sequence(
                        der.sequence(der.oid(f"{config}.1"), der.boolean(self.dynamic_platform)),
                        der.sequence(der.oid(f"{config}.2"), der.boolean(self.cached_keys)),
                        der.sequence(der.oid(f"{config}.3"), der.boolean(self.smt_enabled)),
                    ),
                )
            )
        return der.sequence(*items)
