"""CC event log codec: the TCG crypto-agile log TD firmware writes, and the ACPI CCEL table.

Formats (TCG PC Client Platform Firmware Profile, "Crypto Agile Log Format"; docs/attestation.md §12).
Integers are little-endian.

- The log starts with one ``TCG_PCR_EVENT`` in the legacy SHA-1 layout: ``PCRIndex u32, EventType u32
  (EV_NO_ACTION = 3), Digest[20] (zero), EventSize u32, Event`` where ``Event`` is ``TCG_EfiSpecIDEvent``:
  ``Signature[16] = "Spec ID Event03\\0", platformClass u32, specVersionMinor u8, specVersionMajor u8,
  specErrata u8, uintnSize u8, numberOfAlgorithms u32, {algorithmId u16, digestSize u16} * n,
  vendorInfoSize u8, vendorInfo``.
- Every following event is a ``TCG_PCR_EVENT2``: ``PCRIndex u32, EventType u32, TPML_DIGEST_VALUES
  {count u32, {hashAlg u16, digest[size of hashAlg from the header]} * count}, EventSize u32, Event``.
- In a CC event log ``PCRIndex`` names a CC measurement register (CCMR): 0 = MRTD, k = RTMR[k-1]
  (``CCMR_OF_RTMR``); the replay rule is in ``attest.formats.eventlog.replay``.
- The log area (``LAML`` bytes at ``LASA`` in the CCEL table) is longer than the log: parsing stops at the
  end of the buffer or at an event header whose ``PCRIndex`` and ``EventType`` are all 0xFF (erased
  flash-style fill) or all zero.

- ``EV_EVENT_TAG`` events carry a ``TCG_PCClientTaggedEvent`` (PFP "Event Types"): ``taggedEventID u32,
  taggedEventDataSize u32, taggedEventData[taggedEventDataSize]`` (``TaggedEvent``). The guest library logs
  its measurements so (``tagged_event``): ID ``TDXSIM_MEASURE_EVENT_ID``, the measured bytes as the tagged
  data, and as digest the hash of those bytes, the value extended into the RTMR (an extend of a bare digest:
  ID ``TDXSIM_EXTEND_EVENT_ID``, no data). As UEFI's
  ``HashLogExtendEvent`` does for the events it logs, the digest covers the measured data, not the framing,
  so a verifier checks such an event by hashing its ``taggedEventData``.

``decode_event_log`` checks bounds everywhere (a declared size that overruns the buffer raises
``EventLogError``, never ``IndexError``); ``encode_event_log`` writes the same format, so
``encode_event_log(decode_event_log(raw)) == raw[:consumed]`` byte for byte; ``decode_tagged_event`` and
``TaggedEvent.encode`` likewise for the tagged-event structure. The guest library builds its logs with
``tagged_event`` + ``encode_event_log``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Final

# TCG algorithm identifiers (TCG Algorithm Registry) and the hashlib names behind them.
ALG_SHA1: Final = 0x0004
ALG_SHA256: Final = 0x000B
ALG_SHA384: Final = 0x000C
ALG_SHA512: Final = 0x000D
HASHLIB_NAMES: Final[dict[int, str]] = {
    ALG_SHA1: "sha1",
    ALG_SHA256: "sha256",
    ALG_SHA384: "sha384",
    ALG_SHA512: "sha512",
}

# Event types used by TD firmware (TCG PC Client PFP §10.4.1); any u32 decodes.
EV_POST_CODE: Final = 0x00000001
EV_NO_ACTION: Final = 0x00000003
EV_SEPARATOR: Final = 0x00000004
EV_ACTION: Final = 0x00000005
EV_EVENT_TAG: Final = 0x00000006
EV_PLATFORM_CONFIG_FLAGS: Final = 0x0000000A
EV_EFI_VARIABLE_DRIVER_CONFIG: Final = 0x80000001
EV_EFI_VARIABLE_BOOT: Final = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION: Final = 0x80000003
EV_EFI_ACTION: Final = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB2: Final = 0x8000000A
EV_EFI_HANDOFF_TABLES2: Final = 0x8000000B
EV_EFI_VARIABLE_AUTHORITY: Final = 0x800000E0

TDXSIM_MEASURE_EVENT_ID: Final = int.from_bytes(b"TDXM", "little")
"""``taggedEventID`` of the guest library's measurements (0x4D584454): the bytes read "TDXM" (tdxsim
measurement) in a dump of the log. The PFP leaves tagged-event IDs to whoever defines the event; this one is
tdxsim's."""
TDXSIM_EXTEND_EVENT_ID: Final = int.from_bytes(b"TDXE", "little")
"""``taggedEventID`` (0x45584454, "TDXE") of an RTMR extend whose measured data the guest did not log: the
tagged data is empty and the digest is the one the caller extended."""
TAGGED_EVENT_HEADER_SIZE: Final = 8

SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"
LEGACY_DIGEST_SIZE: Final = 20
MAX_EVENT_DATA: Final = 16 << 20  # a single event larger than this is refused before slicing
MAX_ALGORITHMS: Final = 16
CCMR_MRTD: Final = 0
CCMR_OF_RTMR: Final = (1, 2, 3, 4)  # CCMR index of RTMR0..3 (index = RTMR + 1, trustee PR #1068)
# TDVF writes the Spec ID header with PCRIndex 1 (the real vector does); any index decodes.
DEFAULT_HEADER_MR_INDEX: Final = 1

CCEL_SIGNATURE: Final = b"CCEL"
CCEL_TABLE_SIZE: Final = 56
CC_TYPE_TDX: Final = 2


class EventLogError(ValueError):
    """The event log or CCEL table is malformed; ``reason`` is the ErrorInfo reason the verifier reports."""

    reason = "EVENT_LOG_MALFORMED"


@dataclass(frozen=True)
class SpecIdEvent:
    """The log header: which digest algorithms every ``TCG_PCR_EVENT2`` carries, with their sizes."""

    algorithms: tuple[tuple[int, int], ...] = ((ALG_SHA384, 48),)
    platform_class: int = 0
    spec_version: tuple[int, int, int] = (0, 2, 0)  # minor, major, errata (TCG 2.0)
    uintn_size: int = 2  # 2 = UINT64 (the spec's encoding)
    vendor_info: bytes = b""
    mr_index: int = DEFAULT_HEADER_MR_INDEX

    def digest_size(self, alg: int) -> int | None:
        return next((size for a, size in self.algorithms if a == alg), None)

    def encode_event(self) -> bytes:
        minor, major, errata = self.spec_version
        body = SPEC_ID_SIGNATURE + struct.pack(
            "<IBBBBI", self.platform_class, minor, major, errata, self.uintn_size, len(self.algorithms)
        )
        body += b"".join(struct.pack("<HH", alg, size) for alg, size in self.algorithms)
        body += struct.pack("<B", len(self.vendor_info)) + self.vendor_info
        return body

    def encode(self) -> bytes:
        data = self.encode_event()
        return (
            struct.pack("<II", self.mr_index, EV_NO_ACTION)
            + bytes(LEGACY_DIGEST_SIZE)
            + struct.pack("<I", len(data))
            + data
        )


@dataclass(frozen=True)
class Event:
    """One ``TCG_PCR_EVENT2``: the CCMR it extends, its type, its digests in log order and its data."""

    mr_index: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes = b""

    def digest(self, alg: int = ALG_SHA384) -> bytes | None:
        return next((d for a, d in self.digests if a == alg), None)

    def encode(self) -> bytes:
        out = struct.pack("<III", self.mr_index, self.event_type, len(self.digests))
        out += b"".join(struct.pack("<H", alg) + digest for alg, digest in self.digests)
        return out + struct.pack("<I", len(self.data)) + self.data


@dataclass(frozen=True)
class TaggedEvent:
    """``TCG_PCClientTaggedEvent``, the event data of an ``EV_EVENT_TAG`` event: an ID and the tagged data."""

    event_id: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.event_id <= 0xFFFFFFFF:
            raise EventLogError(f"tagged event id {self.event_id} is not a u32")

    def encode(self) -> bytes:
        return struct.pack("<II", self.event_id, len(self.data)) + self.data


def decode_tagged_event(raw: bytes) -> TaggedEvent:
    """Decode a ``TCG_PCClientTaggedEvent``; its ``taggedEventDataSize`` must frame exactly the rest of
    ``raw``."""
    if len(raw) < TAGGED_EVENT_HEADER_SIZE:
        raise EventLogError(f"tagged event is {len(raw)} bytes, shorter than its 8-byte header")
    event_id, size = struct.unpack_from("<II", raw)
    if size != len(raw) - TAGGED_EVENT_HEADER_SIZE:
        raise EventLogError(
            f"tagged event declares {size} bytes of data, has {len(raw) - TAGGED_EVENT_HEADER_SIZE}"
        )
    return TaggedEvent(event_id, bytes(raw[TAGGED_EVENT_HEADER_SIZE:]))


@dataclass(frozen=True)
class EventLog:
    """A decoded log; ``size`` is the number of bytes the log occupies (the rest of the area is fill)."""

    spec_id: SpecIdEvent
    events: tuple[Event, ...] = field(default=())
    size: int = 0


@dataclass(frozen=True)
class CcelTable:
    """The ACPI CCEL table (56 bytes): CC type (2 = TDX), subtype, log area length and address."""

    cc_type: int
    cc_subtype: int
    log_area_minimum_length: int
    log_area_start_address: int
    oem_id: bytes
    revision: int


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise EventLogError(f"{what} overruns the log at offset {self.pos} ({n} bytes)")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "little")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "little")


def _decode_spec_id(r: _Reader) -> SpecIdEvent:
    mr_index = r.u32("spec id pcr index")
    if r.u32("spec id event type") != EV_NO_ACTION:
        raise EventLogError("first event is not EV_NO_ACTION")
    r.take(LEGACY_DIGEST_SIZE, "spec id digest")
    size = r.u32("spec id event size")
    ev = _Reader(r.take(size, "spec id event"))
    if ev.take(16, "spec id signature") != SPEC_ID_SIGNATURE:
        raise EventLogError("first event is not a crypto-agile Spec ID Event03")
    platform_class = ev.u32("platform class")
    minor, major, errata, uintn = (ev.u8("spec version") for _ in range(4))
    count = ev.u32("number of algorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise EventLogError(f"spec id lists {count} algorithms")
    algorithms = tuple((ev.u16("algorithm id"), ev.u16("digest size")) for _ in range(count))
    if len({alg for alg, _ in algorithms}) != count:
        raise EventLogError("spec id lists an algorithm twice")
    for alg, size_ in algorithms:
        if alg in HASHLIB_NAMES and hashlib.new(HASHLIB_NAMES[alg]).digest_size != size_:
            raise EventLogError(f"algorithm {alg:#06x} declared with digest size {size_}")
    vendor_info = ev.take(ev.u8("vendor info size"), "vendor info")
    if ev.pos != len(ev.buf):
        raise EventLogError("spec id event has trailing bytes")
    return SpecIdEvent(algorithms, platform_class, (minor, major, errata), uintn, vendor_info, mr_index)


def _at_end(r: _Reader) -> bool:
    """End of buffer, or fill (all 0xFF / all zero) where the next header would be; a partial header that is
    not fill is a truncated event."""
    head = r.buf[r.pos : r.pos + 8]
    if head in (b"\xff" * len(head), bytes(len(head))):
        return True
    if len(head) < 8:
        raise EventLogError(f"event header overruns the log at offset {r.pos}")
    return False


def decode_event_log(raw: bytes) -> EventLog:
    """Decode a log area: the Spec ID header, then ``TCG_PCR_EVENT2`` entries until fill or the end."""
    r = _Reader(bytes(raw))
    spec = _decode_spec_id(r)
    events: list[Event] = []
    while not _at_end(r):
        start = r.pos
        mr_index = r.u32("pcr index")
        event_type = r.u32("event type")
        count = r.u32("digest count")
        if count > MAX_ALGORITHMS:
            raise EventLogError(f"event at offset {start} has {count} digests")
        digests: list[tuple[int, bytes]] = []
        for _ in range(count):
            alg = r.u16("digest algorithm")
            size = spec.digest_size(alg)
            if size is None:
                raise EventLogError(f"event at offset {start} uses algorithm {alg:#06x} not in the spec id")
            digests.append((alg, r.take(size, "digest")))
        data_size = r.u32("event size")
        if data_size > MAX_EVENT_DATA:
            raise EventLogError(f"event at offset {start} declares {data_size} bytes of data")
        events.append(Event(mr_index, event_type, tuple(digests), r.take(data_size, "event data")))
    return EventLog(spec, tuple(events), r.pos)


def encode_event_log(log: EventLog | SpecIdEvent, events: tuple[Event, ...] | None = None) -> bytes:
    """Encode a log (the header followed by every event; no fill). Digest sizes must match the header."""
    spec, evs = (log.spec_id, log.events) if isinstance(log, EventLog) else (log, events or ())
    out = [spec.encode()]
    for ev in evs:
        for alg, digest in ev.digests:
            if spec.digest_size(alg) != len(digest):
                raise EventLogError(f"digest of algorithm {alg:#06x} does not match the spec id")
        out.append(ev.encode())
    return b"".join(out)


def measure(
    mr_index: int, event_type: int, data: bytes, algorithms: tuple[int, ...] = (ALG_SHA384,)
) -> Event:
    """An event whose digests are the hashes of ``data`` itself (the common case for tagged events)."""
    digests = []
    for alg in algorithms:
        name = HASHLIB_NAMES.get(alg)
        if name is None:
            raise EventLogError(f"cannot hash with algorithm {alg:#06x}")
        digests.append((alg, hashlib.new(name, data).digest()))
    return Event(mr_index, event_type, tuple(digests), data)


def tagged_event(
    mr_index: int,
    data: bytes,
    event_id: int = TDXSIM_MEASURE_EVENT_ID,
    algorithms: tuple[int, ...] = (ALG_SHA384,),
) -> Event:
    """An ``EV_EVENT_TAG`` event measuring ``data``: the event data is ``TaggedEvent(event_id, data)``, the
    digests are the hashes of ``data`` (the tagged data, not the framing): what the RTMR is extended with."""
    hashed = measure(mr_index, EV_EVENT_TAG, data, algorithms)
    return Event(mr_index, EV_EVENT_TAG, hashed.digests, TaggedEvent(event_id, data).encode())


def decode_ccel_table(raw: bytes) -> CcelTable:
    """Parse the ACPI CCEL table: header (signature, length, checksum), CC type/subtype, LAML, LASA."""
    if len(raw) < CCEL_TABLE_SIZE:
        raise EventLogError(f"ccel table is {len(raw)} bytes, need {CCEL_TABLE_SIZE}")
    if raw[:4] != CCEL_SIGNATURE:
        raise EventLogError("acpi table signature is not CCEL")
    length = int.from_bytes(raw[4:8], "little")
    if length != CCEL_TABLE_SIZE or len(raw) != length:
        raise EventLogError(f"ccel table length {length} (buffer {len(raw)})")
    if sum(raw) % 256:
        raise EventLogError("ccel table checksum mismatch")
    cc_type, cc_subtype = raw[36], raw[37]
    laml, lasa = struct.unpack_from("<QQ", raw, 40)
    return CcelTable(cc_type, cc_subtype, laml, lasa, raw[10:16], raw[8])
