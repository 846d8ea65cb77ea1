"""Minimal DER encoder for the Intel SGX PCK certificate extension (attestation.md §6).

Only the universal types the extension uses: SEQUENCE, OBJECT IDENTIFIER, INTEGER, ENUMERATED, OCTET STRING,
BOOLEAN, with definite lengths in the shortest form (X.690 §8.1.3, §10.1). The reader counterpart is
``attest.verify.der``, which also defines the tag numbers both use.
"""

from __future__ import annotations

from attest.verify.der import (
    TAG_BOOLEAN,
    TAG_ENUMERATED,
    TAG_INTEGER,
    TAG_OCTET_STRING,
    TAG_OID,
    TAG_SEQUENCE,
)


def length(n: int) -> bytes:
    """Definite length octets: short form below 128, else 0x80|k followed by k big-endian octets."""
    if n < 0:
        raise ValueError("negative der length")
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + length(len(value)) + value


def _int_content(n: int) -> bytes:
    """Two's-complement content in the fewest octets (X.690 §8.3.2): 127 -> 7F, 128 -> 00 80, 0 -> 00."""
    size = (n + (n < 0)).bit_length() // 8 + 1
    return n.to_bytes(size, "big", signed=True)


def integer(n: int) -> bytes:
    return tlv(TAG_INTEGER, _int_content(n))


def enumerated(n: int) -> bytes:
    return tlv(TAG_ENUMERATED, _int_content(n))


def octets(value: bytes) -> bytes:
    return tlv(TAG_OCTET_STRING, value)


def boolean(value: bool) -> bytes:
    return tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")


def oid(dotted: str) -> bytes:
    """OBJECT IDENTIFIER: first two arcs as 40*a+b, every arc base-128 with continuation bits."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise ValueError(f"bad oid {dotted}")
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(TAG_OID, bytes(out))


def sequence(*items: bytes) -> bytes:
    return tlv(TAG_SEQUENCE, b"".join(items))
