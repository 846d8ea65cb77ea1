"""Minimal DER, both ways, for the Intel SGX PCK certificate extension (docs/attestation.md §6).

Only what the extension uses: definite lengths in the shortest form, SEQUENCE, OBJECT IDENTIFIER, INTEGER,
ENUMERATED, OCTET STRING, BOOLEAN (X.690 §8.1.3, §10.1). The reader is strict: every overrun or unsupported
encoding raises ``CertificateChainError`` (the extension is part of the PCK certificate) and nothing else
escapes. The encoder builds what the simulated PCS puts in its PCK leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from attest.errors import CertificateChainError

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30
MAX_LENGTH_OCTETS = 4


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes


def _fail(what: str) -> CertificateChainError:
    return CertificateChainError(f"malformed sgx extension: {what}")


def read_tlvs(buf: bytes) -> list[Tlv]:
    """Split ``buf`` into consecutive TLVs; the last one must end exactly at the end of ``buf``."""
    out: list[Tlv] = []
    pos = 0
    while pos < len(buf):
        if pos + 2 > len(buf):
            raise _fail("truncated header")
        tag = buf[pos]
        if tag & 0x1F == 0x1F:
            raise _fail("multi-byte tag")
        first = buf[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            n = first & 0x7F
            if n == 0 or n > MAX_LENGTH_OCTETS or pos + n > len(buf):
                raise _fail("bad length")
            length = int.from_bytes(buf[pos : pos + n], "big")
            pos += n
        if pos + length > len(buf):
            raise _fail("length overruns buffer")
        out.append(Tlv(tag, buf[pos : pos + length]))
        pos += length
    return out


def read_one(buf: bytes, tag: int) -> bytes:
    tlvs = read_tlvs(buf)
    if len(tlvs) != 1 or tlvs[0].tag != tag:
        raise _fail(f"expected one element with tag {tag:#x}")
    return tlvs[0].value


MAX_OID_OCTETS = 64  # the extension's longest OID takes 11 octets; a huge arc would not even print


def decode_oid(value: bytes) -> str:
    if not value or value[-1] & 0x80 or len(value) > MAX_OID_OCTETS:
        raise _fail("bad oid")
    arcs: list[int] = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    first = arcs[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(a) for a in head + arcs[1:])


def decode_int(value: bytes) -> int:
    if not value:
        raise _fail("empty integer")
    return int.from_bytes(value, "big", signed=True)


def oid_value_pairs(seq_value: bytes) -> list[tuple[str, Tlv]]:
    """Decode ``SEQUENCE OF SEQUENCE { OID, value }`` content into (dotted oid, value TLV) pairs."""
    out: list[tuple[str, Tlv]] = []
    for item in read_tlvs(seq_value):
        if item.tag != TAG_SEQUENCE:
            raise _fail("expected sequence")
        parts = read_tlvs(item.value)
        if len(parts) != 2 or parts[0].tag != TAG_OID:
            raise _fail("expected (oid, value)")
        out.append((decode_oid(parts[0].value), parts[1]))
    return out


# Encoding


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
