"""Hostile requests for every method of every tdxsim service, generated from the protobuf descriptors.

One ``random.Random`` drives every choice, so the hypothesis tests (``st.randoms(use_true_random=False)``,
whose examples shrink) and ``tdxsim soak`` run the same generators. :func:`draw` makes one :class:`Hostile`
call:

- **message** mode: a request built field by field from its descriptor: integers from edge sets (0, 1,
  2^k-1, 2^k, 2^k+1 for the widths and address bits that matter: 12, 21, 30, 32, 40, 46, 47, 48, 51, 52, 63,
  64) or at random, bytes and strings of edge lengths, nested messages, short repeated fields, one member of
  each oneof; ``td_id`` fields name live TDs or junk, quote-like fields mutate samples of real evidence;
- **raw** mode: bytes sent with identity serializers: random bytes, a truncated, corrupted or extended
  valid request, invalid UTF-8 in a string field, a wrong wire type, an overlong varint, a stray group tag;
  whether the request decodes is known beforehand (the same protobuf runtime decides it here);
- **stall** mode: a call that sends its headers and then nothing, until it is released (the message is
  sent), cancelled, half-closed without a message or left to its deadline.

Each call carries a credential drawn from none, the target TD's own, another TD's, an admin credential and
junk. The :class:`World` names what calls may aim at; :func:`draw` never makes a call that may legitimately
change a sentinel TD (only its own guest or its host operator could), so a sentinel that changes is a
finding. Sizes stay within the documented limits (docs/conventions.md §6) except for a few bounded cases.

:func:`send` and :class:`Stall` run a call on a channel; :func:`breach` says whether its outcome breaks the
contract (never INTERNAL or UNKNOWN; undecodable bytes are INVALID_ARGUMENT, or an authentication refusal
where authentication comes before decoding).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError

from wire.rpc_status import error_info
from wire.v1 import attestation_pb2, guest_pb2, host_pb2

HOST_SERVICE = "tdxsim.v1.HostService"
GUEST_SERVICE = "tdxsim.v1.TdGuestService"
VERIFIER_SERVICE = "tdxsim.v1.VerifierService"
NEVER = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
#: Codes that mean the server never answered the request (down, restarting, too slow, or the caller gave
#: up): they say nothing about how it decodes, and liveness is checked on its own.
UNANSWERED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
MODES = ("message", "raw", "stall")
CREDENTIAL_KINDS = ("none", "own", "other", "admin", "junk")
#: How often each kind is drawn, by service: the credential that opens the service half of the time, so that
#: calls get past authentication as often as they are refused by it.
CREDENTIAL_WEIGHTS = {
    "tdxsim.v1.HostService": (1, 1, 1, 4, 1),
    "tdxsim.v1.TdGuestService": (1, 4, 1, 1, 1),
    "tdxsim.v1.VerifierService": (2, 1, 1, 3, 1),
}
#: HostService methods whose only effect on a TD is to look at it, or (``HostWrite`` and the guest_memfd file
#: operations in gmem mode) to be refused: the operator may aim them at a sentinel.
HOST_LOOKS = frozenset(
    {
        "ListTds",
        "GetStats",
        "HostRead",
        "HostWrite",
        "WatchEvents",
        "GetGpaMap",
        "GuestMemfdRead",
        "GuestMemfdWrite",
        "GuestMemfdMmap",
        "GuestMemfdFtruncate",
    }
)
#: The physical attacker's surfaces (docs/memory-model.md §7.2): with the operator's credential they may write
#: any frame and, through the host's KeyID, consume poison (a host machine check), which are the platform's
#: answers, not faults; so the operator aims them only at fuzz TDs, by GPA, and reads DRAM itself anywhere.
PHYSICAL = frozenset({"PhysicalRead", "PhysicalWrite"})
EDGE_EXPONENTS = (12, 21, 30, 32, 40, 46, 47, 48, 51, 52, 63, 64)
BYTES_LENGTHS = (
    0,
    1,
    2,
    15,
    16,
    17,
    31,
    32,
    33,
    47,
    48,
    49,
    63,
    64,
    65,
    91,
    255,
    256,
    4095,
    4096,
    4097,
    8192,
)
STRING_LENGTHS = (0, 1, 2, 7, 8, 63, 64, 65, 255, 256, 1024, 4097)
#: The few bounded big cases: once in a while a field is this long (within every documented limit).
BIG_BYTES = (65536, 65537, 1 << 20, (2 << 20) + 1)
MAX_REPEATED = 8
#: One more instruction than a TdGuestService request may carry (``BATCH_TOO_LARGE``): a bounded big case.
BATCH_OVER = 65537
U64 = (1 << 64) - 1
_SCALAR_TYPES = {
    FieldDescriptor.TYPE_UINT64: (0, 64, False),
    FieldDescriptor.TYPE_FIXED64: (0, 64, False),
    FieldDescriptor.TYPE_UINT32: (0, 32, False),
    FieldDescriptor.TYPE_FIXED32: (0, 32, False),
    FieldDescriptor.TYPE_INT64: (0, 64, True),
    FieldDescriptor.TYPE_SINT64: (0, 64, True),
    FieldDescriptor.TYPE_SFIXED64: (0, 64, True),
    FieldDescriptor.TYPE_INT32: (0, 32, True),
    FieldDescriptor.TYPE_SINT32: (0, 32, True),
    FieldDescriptor.TYPE_SFIXED32: (0, 32, True),
}
#: Keys the verifier's policy schemas know, mixed into generated JSON so that some of it gets past the
#: first key check; generated JSON also has keys no schema knows.
JSON_KEYS = (
    "version", "policy", "reference_values", "reference_value_sets", "accepted_tcb_statuses", "allow_debug",
    "min_tee_tcb_svn", "rejected_advisory_ids", "require_event_log", "require_nonce", "token_ttl_seconds",
    "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "mr_seam", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
    "xfam", "td_attributes", "attestation_policies", "claims", "ear_statuses", "tcb_status", "fmspc", "debug",
    "default", "affirming", "warning", "contraindicated", "none", "", "__proto__", "x" * 70,
)  # fmt: skip
TEXT_POOL = (
    "", "default", "soak-fuzz", ".", "..", "../../etc/passwd", "a/b", "a//b", "/abs", "key/",
    "UpToDate", "Revoked", "\x00", "nul\x00inside", "é", "中文", "😀", "\u202e", "\ufeff", " ", "\t\n",
    "%s%n", "{}", "[]",
)  # fmt: skip


# ---- the methods -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    service: str
    name: str
    request_class: Any
    response_class: Any
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def label(self) -> str:
        return f"{self.service.rsplit('.', 1)[-1]}.{self.name}"


def _methods() -> tuple[Method, ...]:
    found = []
    for module, service in (
        (host_pb2, "HostService"),
        (guest_pb2, "TdGuestService"),
        (attestation_pb2, "VerifierService"),
    ):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        for method in descriptor.methods:
            found.append(
                Method(
                    descriptor.full_name,
                    method.name,
                    getattr(module, method.input_type.name),
                    getattr(module, method.output_type.name),
                    method.server_streaming,
                )
            )
    return tuple(found)


#: Every method of HostService, TdGuestService and VerifierService, in descriptor order.
METHODS = _methods()
BY_LABEL = {m.label: m for m in METHODS}


# ---- what calls aim at -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TdRef:
    td_id: int
    #: The TD's credential ("" when the caller does not know it, e.g. a guest process's TD).
    credential: str
    #: "fuzz": hostile calls may do anything to it; "sentinel": holds markers nobody else may see or change;
    #: "guest": belongs to a guest process (looked at, never changed).
    role: str = "fuzz"


@dataclass(frozen=True)
class World:
    tds: Sequence[TdRef] = ()
    host_admin: str = ""
    verifier_admin: str = ""
    #: Result tokens of attested TDs (credentials for GetResource).
    tokens: Sequence[str] = ()
    #: Samples for bytes fields by field name (``quote``, ``event_log``, ``nonce``, ``tee_public_key``), which
    #: calls send mutated.
    corpus: Mapping[str, Sequence[bytes]] = field(default_factory=dict)
    #: Strings no call may send (the names of policies and resources the soak's guests rely on).
    protected: frozenset[str] = frozenset()
    #: TD ids that were live once and are gone.
    gone: Sequence[int] = ()
    #: guest_memfd numbers the host handed out (to any TD).
    fds: Sequence[int] = ()

    def credential_owner(self, credential: str | None) -> TdRef | None:
        if not credential:
            return None
        return next((td for td in self.tds if td.credential and td.credential == credential), None)


# ---- values ------------------------------------------------------------------------------------------------


def pick(rnd: random.Random, items: Sequence[Any]) -> Any:
    """One of ``items`` (None when there are none). The draw is the same whatever ``items`` holds: a
    hypothesis-driven ``rnd`` must draw the same way when an example is replayed against a world whose lists
    have changed meanwhile (TDs come and go), or it reports a flaky strategy."""
    index = rnd.getrandbits(16)
    return items[index % len(items)] if items else None


def edge_int(rnd: random.Random) -> int:
    """An integer from the edge set, a random width, or small."""
    pick = rnd.random()
    if pick < 0.55:
        k = rnd.choice(EDGE_EXPONENTS)
        return (1 << k) + rnd.choice((-1, 0, 1))
    if pick < 0.7:
        return rnd.choice((0, 1, 2, 3, 7, 8, 4096, 0x200000))
    if pick < 0.85:
        return rnd.randrange(0, 512) * 4096
    return rnd.getrandbits(rnd.choice((8, 16, 32, 48, 64)))


def fit(value: int, bits: int, signed: bool) -> int:
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    return value


def _int_for(rnd: random.Random, f: FieldDescriptor, world: World, target: TdRef | None) -> int:
    _, bits, signed = _SCALAR_TYPES[f.type]
    name = f.name
    if name == "td_id":
        return _td_id(rnd, world, target)
    if name in ("fd", "guest_memfd"):
        known, junk = pick(rnd, world.fds), rnd.choice((-1, 0, 9, 10, 11, 12, (1 << 31) - 1, -(1 << 31)))
        return int(known) if known is not None and rnd.random() < 0.6 else junk
    if name in ("level", "index", "slot", "mode") and rnd.random() < 0.6:
        return rnd.choice((0, 1, 2, 3, 4))
    value = edge_int(rnd)
    if name in ("gpa", "address", "guest_phys_addr", "report_gpa", "reportdata_gpa") and rnd.random() < 0.2:
        value |= 1 << rnd.choice((47, 51))  # the shared bit of GPAW 48 or 52
    if signed and rnd.random() < 0.3:
        value = -value
    return fit(value, bits, signed)


def _td_id(rnd: random.Random, world: World, target: TdRef | None) -> int:
    how = rnd.random()
    live, gone = pick(rnd, world.tds), pick(rnd, world.gone)
    junk = rnd.choice((0, 1, 2, U64, 1 << 63, 1 << 32, rnd.getrandbits(64)))
    if target is not None and how < 0.7:
        return target.td_id
    if live is not None and how < 0.85:
        return int(live.td_id)
    if gone is not None and how < 0.9:
        return int(gone)
    return junk


def blob(rnd: random.Random, length: int) -> bytes:
    """``length`` bytes of one of a few shapes; bulk content comes from a seeded generator so a random
    ``rnd`` records one draw for it, not one per byte."""
    shape = rnd.random()
    if shape < 0.2:
        return bytes(length)
    if shape < 0.3:
        return b"\xff" * length
    if shape < 0.4:
        pattern = bytes([rnd.getrandbits(8)]) or b"\x00"
        return pattern * length
    return random.Random(rnd.getrandbits(64)).randbytes(length)


def mutate(rnd: random.Random, sample: bytes) -> bytes:
    """A sample, as it is or with a few bytes flipped, truncated, extended or spliced (every edit draws the
    same way whatever the sample's length: see :func:`pick`)."""
    data = bytearray(sample)
    for _ in range(rnd.choice((0, 1, 1, 2, 4))):
        how, where, bit = rnd.random(), rnd.getrandbits(32), rnd.getrandbits(3)
        extra = blob(rnd, rnd.choice((1, 2, 4, 8, 16, 64)))
        if not data or how < 0.4:
            data += extra
        elif how < 0.7:
            data[where % len(data)] ^= 1 << bit
        elif how < 0.85:
            del data[where % len(data) :]
        else:
            at = where % len(data)
            data[at : at + len(extra)] = extra
    return bytes(data)


def _bytes_for(rnd: random.Random, f: FieldDescriptor, world: World) -> bytes:
    use_sample, sample = rnd.random() < 0.6, pick(rnd, world.corpus.get(f.name, ()))
    if use_sample and sample is not None:
        return mutate(rnd, sample)
    if rnd.random() < 0.01:
        return blob(rnd, rnd.choice(BIG_BYTES))
    return blob(rnd, rnd.choice(BYTES_LENGTHS))


def _text(rnd: random.Random, length: int) -> str:
    alphabet = rnd.choice(
        (
            "abcdefghijklmnopqrstuvwxyz0123456789",
            "abc/._-",
            "0123456789abcdef",
            "é中😀\u202e\x00\x7f\t\n \"'\\{}[],:",
        )
    )
    sub = random.Random(rnd.getrandbits(64))
    return "".join(sub.choice(alphabet) for _ in range(length))


def json_value(rnd: random.Random, depth: int = 0) -> Any:
    pick = rnd.random()
    if depth < 3 and pick < 0.35:
        return {rnd.choice(JSON_KEYS): json_value(rnd, depth + 1) for _ in range(rnd.choice((0, 1, 2, 3)))}
    if depth < 3 and pick < 0.5:
        return [json_value(rnd, depth + 1) for _ in range(rnd.choice((0, 1, 2, 4)))]
    if pick < 0.6:
        return rnd.choice((True, False, None))
    if pick < 0.75:
        value = edge_int(rnd)
        return rnd.choice((value, -value, float(value) / 3, 1e308))
    if pick < 0.85:
        return blob(rnd, rnd.choice((0, 32, 48))).hex()
    return rnd.choice(TEXT_POOL + JSON_KEYS)


def json_text(rnd: random.Random) -> str:
    pick = rnd.random()
    if pick < 0.7:
        return json.dumps(
            {rnd.choice(JSON_KEYS): json_value(rnd, 1) for _ in range(rnd.choice((0, 1, 2, 4)))}
        )
    if pick < 0.8:
        return json.dumps(json_value(rnd))
    if pick < 0.9:  # deep nesting, bounded: a parser must refuse it, not fall over
        depth = rnd.choice((100, 1000, 5000))
        return "[" * depth + "]" * depth if rnd.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
    return rnd.choice(("{", "[1,", "nul", "1e999999", '{"a":NaN}', '{"a":1,"a":2}', "\ufeff{}", ""))


def _string_for(rnd: random.Random, f: FieldDescriptor, world: World) -> str:
    if f.name.endswith("_json") and rnd.random() < 0.8:
        return json_text(rnd)
    if rnd.random() < 0.35:
        return rnd.choice(TEXT_POOL)
    if f.name == "path" and rnd.random() < 0.5:
        return "/".join(_text(rnd, rnd.choice((0, 1, 3, 8))) for _ in range(rnd.choice((1, 2, 3, 8, 9))))
    return _text(rnd, rnd.choice(STRING_LENGTHS))


def _scalar(rnd: random.Random, f: FieldDescriptor, world: World, target: TdRef | None) -> Any:
    if f.type in _SCALAR_TYPES:
        return _int_for(rnd, f, world, target)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return rnd.random() < 0.5
    if f.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rnd.choice((0.0, -1.0, 1e308, float("inf"), float("nan"), rnd.random()))
    if f.type == FieldDescriptor.TYPE_ENUM:
        numbers = [v.number for v in f.enum_type.values]
        return rnd.choice(numbers) if rnd.random() < 0.8 else fit(edge_int(rnd), 32, True)
    if f.type == FieldDescriptor.TYPE_BYTES:
        return _bytes_for(rnd, f, world)
    if f.type == FieldDescriptor.TYPE_STRING:
        return _string_for(rnd, f, world)
    raise TypeError(f"no generator for field {f.full_name} of type {f.type}")


def message(rnd: random.Random, cls: Any, world: World, target: TdRef | None = None, depth: int = 0) -> Any:
    """A request of class ``cls`` built from its descriptor."""
    msg = cls()
    descriptor = cls.DESCRIPTOR
    chosen_oneof = {
        oneof.name: rnd.choice(oneof.fields) if rnd.random() < 0.85 else None
        for oneof in descriptor.oneofs
        if len(oneof.fields) > 1  # a proto3 ``optional`` is a one-field synthetic oneof: plain presence
    }
    for f in descriptor.fields:
        oneof = f.containing_oneof
        if oneof is not None and oneof.name in chosen_oneof:
            if chosen_oneof[oneof.name] is not f:
                continue
        elif rnd.random() < 0.2 and f.name != "td_id":
            continue
        _fill(rnd, msg, f, world, target, depth)
    return msg


def _fill(
    rnd: random.Random, msg: Any, f: FieldDescriptor, world: World, target: TdRef | None, depth: int
) -> None:
    is_message = f.type == FieldDescriptor.TYPE_MESSAGE
    if f.is_repeated:
        count = rnd.choice((0, 1, 1, 2, 3, 5, MAX_REPEATED))
        container = getattr(msg, f.name)
        if is_message and depth < 3 and rnd.random() < 0.003:
            element = message(rnd, f.message_type._concrete_class, world, target, depth + 1)
            if element.ByteSize() > 32:  # many small elements, never a request past the size limits
                element = f.message_type._concrete_class()
            container.extend([element] * BATCH_OVER)
            return
        for _ in range(count):
            if is_message:
                if depth < 3:
                    container.add().CopyFrom(
                        message(rnd, f.message_type._concrete_class, world, target, depth + 1)
                    )
            else:
                container.append(_scalar(rnd, f, world, target))
        return
    if is_message:
        if depth < 3:
            getattr(msg, f.name).CopyFrom(
                message(rnd, f.message_type._concrete_class, world, target, depth + 1)
            )
        return
    setattr(msg, f.name, _scalar(rnd, f, world, target))


# ---- raw bytes ---------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def raw_bytes(rnd: random.Random, method: Method, world: World, target: TdRef | None) -> tuple[str, bytes]:
    """(how they were made, bytes) for a raw-mode request; many of them do not decode."""
    valid = message(rnd, method.request_class, world, target).SerializeToString()
    fields = method.request_class.DESCRIPTOR.fields
    strings = [f for f in fields if f.type == FieldDescriptor.TYPE_STRING]
    how = rnd.choice(
        (
            "random",
            "random",
            "truncated",
            "truncated",
            "corrupted",
            "appended",
            "bad-utf8",
            "wrong-wire-type",
            "overlong-varint",
            "length-overrun",
            "group-tag",
            "unknown-field",
            "empty",
        )
    )
    if how == "random":
        return how, blob(rnd, rnd.choice((1, 2, 3, 5, 8, 16, 64, 512, 4096)))
    if how == "truncated":
        if len(valid) < 2:
            return how, b"\x0a\x05ab"  # a length-delimited field that promises more than it has
        return how, valid[: 1 + rnd.getrandbits(32) % (len(valid) - 1)]
    if how == "corrupted":
        return how, mutate(rnd, valid)
    if how == "appended":
        return how, valid + blob(rnd, rnd.choice((1, 2, 3, 7)))
    if how == "bad-utf8" and strings:
        f = rnd.choice(strings)
        junk = rnd.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xfe\xfe"))
        return how, valid + _tag(f.number, 2) + _varint(len(junk)) + junk
    if how in ("wrong-wire-type", "bad-utf8") and fields:
        f = rnd.choice(fields)
        if f.type in (FieldDescriptor.TYPE_BYTES, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            return "wrong-wire-type", valid + _tag(f.number, 5) + b"\x01\x02\x03\x04" + _tag(
                f.number, 0
            ) + b"\x01"
        return "wrong-wire-type", valid + _tag(f.number, 2) + b"\x04" + b"\x01\x02\x03\x04" + _tag(
            f.number, 5
        )
    if how == "overlong-varint":
        return how, _tag(1, 0) + b"\xff" * 10 + b"\x01"
    if how == "length-overrun":
        return how, _tag(rnd.choice((1, 2, 3)), 2) + _varint(rnd.choice((1 << 20, 1 << 31, 1 << 62))) + b"abc"
    if how == "group-tag":
        return how, valid + _tag(rnd.choice((1, 2, 15)), rnd.choice((3, 4)))
    if how == "unknown-field":
        return how, valid + _tag(rnd.choice((99, 1000, 536870911)), 2) + b"\x03xyz"
    return "empty", b""


def decodes(method: Method, data: bytes) -> Any | None:
    """The request ``data`` decodes to, or None when the protobuf runtime refuses it."""
    try:
        return method.request_class.FromString(data)
    except (DecodeError, RuntimeError, ValueError):
        return None


# ---- credentials and the sentinel rule ---------------------------------------------------------------------


def junk_credential(rnd: random.Random, world: World) -> str:
    near = world.host_admin or world.verifier_admin or "x"
    return rnd.choice(
        (
            "x",
            "0" * 64,
            "Bearer",
            near[:-1],
            near + "0",
            near.upper(),
            "a" * 1024,
            " ".join([near, near]),
            blob(rnd, 32).hex(),
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        )
    )


def _credential(
    rnd: random.Random, kind: str, method: Method, world: World, target: TdRef | None
) -> str | None:
    """A credential of ``kind``; every kind draws the same way whatever the world holds (:func:`pick`)."""
    how = rnd.random()
    other = pick(rnd, [td for td in world.tds if td.credential and td is not target])
    token = pick(rnd, world.tokens)
    junk = junk_credential(rnd, world)
    if kind == "none":
        return None
    if kind == "own" and target is not None and target.credential:
        return target.credential
    if kind in ("own", "other"):
        if other is not None:
            return str(other.credential)
        return str(token) if token is not None else junk
    if kind == "admin":
        if method.service == VERIFIER_SERVICE:
            if token is not None and how < 0.3:
                return str(token)
            return world.verifier_admin if how < 0.85 else world.host_admin
        return world.host_admin if how < 0.9 else world.verifier_admin
    return junk


def _td_ids(msg: Any) -> Iterator[int]:
    for f, value in msg.ListFields():
        if f.name == "td_id":
            yield value
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if f.is_repeated else (value,):
                yield from _td_ids(item)


def _strings(msg: Any) -> Iterator[str]:
    for f, value in msg.ListFields():
        if f.type == FieldDescriptor.TYPE_STRING:
            yield from value if f.is_repeated else (value,)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if f.is_repeated else (value,):
                yield from _strings(item)


def permitted(method: Method, credential: str | None, request: Any, world: World) -> bool:
    """Whether a call could not legitimately change a sentinel (or guest) TD or what the soak's guests rely
    on: the operator only looks at them (:data:`HOST_LOOKS`), no TD credential speaks for them, and
    protected names (policies, resources) are left alone."""
    if request is None:  # undecodable: the server must refuse it whatever it is
        return True
    protected_ids = {td.td_id for td in world.tds if td.role != "fuzz"}
    if method.service == HOST_SERVICE and method.name in PHYSICAL and credential == world.host_admin:
        dram_read = method.name == "PhysicalRead" and request.path == host_pb2.PHYSICAL_PATH_DRAM
        targets = set(_td_ids(request))
        if not dram_read and (not request.HasField("td_gpa") or targets & protected_ids):
            return False
    admin_changes = method.service == HOST_SERVICE and method.name not in HOST_LOOKS
    if admin_changes and credential == world.host_admin and protected_ids & set(_td_ids(request)):
        return False
    if method.service == GUEST_SERVICE:
        owner = world.credential_owner(credential)
        if owner is not None and owner.role != "fuzz" and owner.td_id in set(_td_ids(request)):
            return False
    return not (world.protected and world.protected & set(_strings(request)))


# ---- one hostile call --------------------------------------------------------------------------------------


@dataclass
class Hostile:
    method: Method
    mode: str
    credential_kind: str
    credential: str | None
    #: The bytes sent: a serialized request, or raw bytes.
    payload: bytes
    #: The request the payload decodes to (None when it does not decode).
    request: Any
    #: How raw bytes were made ("" in message and stall modes).
    raw_kind: str = ""
    #: stall mode: how long the call sends nothing, and how it ends: "send" the message, "cancel",
    #: "close" (half-close without a message) or "deadline" (never released before it).
    stall_seconds: float = 0.0
    stall_end: str = ""
    #: Whether the credential is the host's admin credential (HostService checks it before decoding).
    host_admin: bool = False

    @property
    def decodable(self) -> bool:
        return self.request is not None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self.credential is None else (("authorization", f"Bearer {self.credential}"),)

    def describe(self) -> str:
        what = self.raw_kind or ("stall:" + self.stall_end if self.mode == "stall" else "message")
        return f"{self.method.label} [{self.mode}/{what}, credential {self.credential_kind}]"

    def reproducer(self) -> dict[str, object]:
        """What it takes to send this call again (the credential by kind only: it is a secret)."""
        out: dict[str, object] = {
            "method": self.method.path,
            "mode": self.mode,
            "credential": self.credential_kind,
            "payload_hex": self.payload.hex()
            if len(self.payload) <= 4096
            else self.payload[:4096].hex() + "…",
            "payload_bytes": len(self.payload),
            "decodable": self.decodable,
        }
        if self.raw_kind:
            out["raw_kind"] = self.raw_kind
        if self.mode == "stall":
            out["stall"] = {"seconds": self.stall_seconds, "end": self.stall_end}
        if self.request is not None and len(self.payload) <= 4096:
            out["request"] = text_format.MessageToString(self.request, as_one_line=True)[:2000]
        return out


def _target(rnd: random.Random, method: Method, kind: str, world: World) -> TdRef | None:
    """The TD a call is about: for a TD's own credential, or the operator's on a method that changes TDs, a
    fuzz TD (nobody else may change the others); else any live TD."""
    fuzz = pick(rnd, [td for td in world.tds if td.role == "fuzz" and td.credential])
    anyone = pick(rnd, world.tds)
    changes = method.service == GUEST_SERVICE or method.name not in HOST_LOOKS
    if (
        (kind == "own" or (kind == "admin" and method.service == HOST_SERVICE))
        and changes
        and fuzz is not None
    ):
        return fuzz  # type: ignore[no-any-return]
    return anyone  # type: ignore[no-any-return]


def draw(
    rnd: random.Random,
    world: World,
    method: Method | None = None,
    mode: str | None = None,
    kind: str | None = None,
) -> Hostile:
    """One hostile call: ``method``, ``mode`` and credential ``kind`` at random unless given. A call that
    :func:`permitted` does not allow goes out with a junk credential instead (no redraw, so the draws are
    the same whatever the world holds)."""
    method = method or rnd.choice(METHODS)
    mode = mode or rnd.choices(MODES, weights=(70, 25, 5))[0]
    chosen = kind or rnd.choices(CREDENTIAL_KINDS, CREDENTIAL_WEIGHTS[method.service])[0]
    target = _target(rnd, method, chosen, world)
    credential = _credential(rnd, chosen, method, world, target)
    junk = junk_credential(rnd, world)
    raw_kind = ""
    if mode == "raw":
        raw_kind, payload = raw_bytes(rnd, method, world, target)
        request = decodes(method, payload)
    else:
        request = message(rnd, method.request_class, world, target)
        payload = request.SerializeToString()
    stall_seconds = rnd.choice((0.2, 0.5, 1.0, 2.0))
    stall_end = rnd.choice(("send", "send", "cancel", "close", "deadline"))
    if not permitted(method, credential, request, world):
        chosen, credential = "junk", junk
    hostile = Hostile(method, mode, chosen, credential, payload, request, raw_kind)
    hostile.host_admin = bool(credential) and credential == world.host_admin
    if mode == "stall":
        hostile.stall_seconds, hostile.stall_end = stall_seconds, stall_end
    return hostile


# ---- running calls -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: grpc.StatusCode
    reason: str = ""
    details: str = ""
    #: Serialized responses (a stream: the first few messages).
    responses: list[bytes] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        return f"{self.code.name} {self.reason} {self.details!r}".replace("  ", " ")


def _failure(err: grpc.RpcError, started: float) -> Outcome:
    try:
        info = error_info(err)
    except ValueError:  # a status detail that contradicts the code: no ErrorInfo to read
        info = None
    return Outcome(
        err.code(),
        info.reason if info is not None else "",
        err.details() or "",
        seconds=time.monotonic() - started,
    )


def send(hostile: Hostile, channel: grpc.Channel, timeout: float = 5.0, stream_messages: int = 1) -> Outcome:
    """Send a message- or raw-mode call and wait for its outcome (for a stream: its first
    ``stream_messages`` messages, then the call is cancelled). Stall mode goes through :class:`Stall`."""
    if hostile.mode == "stall":
        stall = Stall(hostile, channel, timeout)
        stall.start()
        return stall.finish()
    started = time.monotonic()
    method = hostile.method
    try:
        if method.server_streaming:
            call = channel.unary_stream(method.path)(
                hostile.payload, metadata=hostile.metadata(), timeout=timeout
            )
            responses = []
            try:
                for item in call:
                    responses.append(item)
                    if len(responses) >= stream_messages:
                        break
            finally:
                call.cancel()
            return Outcome(grpc.StatusCode.OK, responses=responses, seconds=time.monotonic() - started)
        reply = channel.unary_unary(method.path)(
            hostile.payload, metadata=hostile.metadata(), timeout=timeout
        )
        return Outcome(grpc.StatusCode.OK, responses=[reply], seconds=time.monotonic() - started)
    except grpc.RpcError as err:
        return _failure(err, started)


class Stall:
    """A stall-mode call: headers go out, then nothing until :meth:`finish` ends it as the call says."""

    def __init__(self, hostile: Hostile, channel: grpc.Channel, timeout: float) -> None:
        self.hostile = hostile
        self._channel = channel
        # The deadline must fall while the call is stalled when that is the point.
        self._timeout = (
            min(timeout, hostile.stall_seconds / 2) if hostile.stall_end == "deadline" else timeout
        )
        self._released = threading.Event()
        self._call: Any = None
        self._started = 0.0

    def _requests(self) -> Iterator[bytes]:
        self._released.wait(self._timeout + self.hostile.stall_seconds + 5)
        if self.hostile.stall_end == "send":
            yield self.hostile.payload

    def start(self) -> None:
        method = self.hostile.method
        self._started = time.monotonic()
        metadata = self.hostile.metadata()
        if method.server_streaming:
            self._call = self._channel.stream_stream(method.path)(
                self._requests(), metadata=metadata, timeout=self._timeout
            )
        else:
            self._call = self._channel.stream_unary(method.path).future(
                self._requests(), metadata=metadata, timeout=self._timeout
            )

    def finish(self) -> Outcome:
        """Wait the stall out, end it, and return the call's outcome."""
        hostile = self.hostile
        time.sleep(max(0.0, hostile.stall_seconds - (time.monotonic() - self._started)))
        if hostile.stall_end == "cancel":
            self._call.cancel()
        self._released.set()
        try:
            if hostile.method.server_streaming:
                responses = []
                try:
                    for item in self._call:
                        responses.append(item)
                        break
                finally:
                    self._call.cancel()
                return Outcome(
                    grpc.StatusCode.OK, responses=responses, seconds=time.monotonic() - self._started
                )
            reply = self._call.result()
            return Outcome(grpc.StatusCode.OK, responses=[reply], seconds=time.monotonic() - self._started)
        except grpc.RpcError as err:
            return _failure(err, self._started)
        except grpc.FutureCancelledError:
            return Outcome(grpc.StatusCode.CANCELLED, seconds=time.monotonic() - self._started)


def breach(hostile: Hostile, outcome: Outcome) -> str | None:
    """Why the outcome breaks the servers' contract (docs/conventions.md §7), or None. Never INTERNAL or
    UNKNOWN; a request that does not decode is INVALID_ARGUMENT, except that HostService checks the admin
    credential first, so there a refusal of the credential is right as well."""
    if outcome.code in NEVER:
        return f"{outcome.code.name}: {outcome.details}"
    if hostile.mode == "raw" and not hostile.decodable and outcome.code not in UNANSWERED:
        allowed = {grpc.StatusCode.INVALID_ARGUMENT}
        if hostile.method.service == HOST_SERVICE and not hostile.host_admin:
            allowed |= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
        if outcome.code not in allowed:
            return f"undecodable request ended {outcome.code.name}, not INVALID_ARGUMENT: {outcome.details}"
    return None
