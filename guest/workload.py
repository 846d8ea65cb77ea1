"""Workload files: a human-writable list of guest steps that ``tdxsim guest run SCRIPT`` executes in a
launched TD, printing what happened at each step.

One step per line; ``#`` starts a comment; arguments are split like a shell (quotes group). Numbers are
decimal, ``0x`` hex, or sizes with K/M/G suffixes. A GPA is private unless written ``shared:GPA`` (the
library sets the TD's shared bit, bit 47 or 51). DATA is one of ``text:STRING``, ``hex:HEX``,
``fill:BYTE*COUNT`` (e.g. ``fill:0xab*4K``) or ``file:PATH`` (relative to the workload file).

==========================================  ==================================================================
step                                        what the guest does
==========================================  ==================================================================
``accept GPA SIZE [allow-accepted]``        TDG.MEM.PAGE.ACCEPT (2M where aligned, else 4K); already-accepted
                                            pages fail the step unless ``allow-accepted``
``write GPA DATA``                          store DATA at GPA (batched, private or shared)
``read GPA LEN [expect DATA]``              load LEN bytes; with ``expect`` the step fails unless they equal
                                            DATA (``fill:0*LEN`` checks for zeros)
``convert shared|private GPA SIZE``         MapGPA to shared (contents lost), or MapGPA + ACCEPT to private
``extend INDEX DATA``                       RTMR[INDEX] extend with SHA-384(DATA), logged as a CC event
``report [DATA]``                           TDREPORT, REPORTDATA = DATA zero-padded to 64 bytes; fails if
                                            the RTMRs in it differ from the replayed event log
``quote [DATA]``                            TDREPORT → GetQuote via the shared bounce pool; prints its size
``sleep SECONDS``                           wait (the TD stays alive)
``attest VERIFIER [policy NAME]``           remote attestation at a ``tdxsim verifier``: nonce, quote bound to
``[secret PATH [expect DATA]]``             a fresh key, token; with ``secret`` the resource released to the
                                            token, opened with the TD's key (``expect`` checks it)
==========================================  ==================================================================

Any step may end with ``expect-error REASON``: it then passes only if it fails with that ErrorInfo reason
(e.g. ``read 0x800000 16 expect-error VE_PENDING_PAGE``, ``quote expect-error QGS_UNAVAILABLE``).

The top :data:`guest.td.DEFAULT_BOUNCE_BYTES` (2 MiB) of guest memory are the library's shared bounce pool and
its first private free page holds the report scratch page; workloads should use other GPAs.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from attest.codec.tdreport import decode_tdreport
from guest.attestation import Verifier
from guest.errors import GuestError
from guest.image import ImageError, parse_number
from guest.td import Td

DATA_PREVIEW = 32


class WorkloadError(ValueError):
    """A line of the workload file cannot be understood (raised before the TD is launched)."""


@dataclass(frozen=True)
class Step:
    line: int
    text: str
    op: str
    args: tuple[str, ...]
    expect_error: str | None = None


@dataclass
class StepResult:
    line: int
    step: str
    ok: bool
    detail: str
    ms: float
    reason: str = ""
    values: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "line": self.line,
            "step": self.step,
            "ok": self.ok,
            "detail": self.detail,
            "ms": round(self.ms, 3),
        }
        if self.reason:
            out["reason"] = self.reason
        if self.values:
            out["values"] = self.values
        return out


_ARITY: dict[str, tuple[int, int]] = {
    "accept": (2, 3),
    "write": (2, 2),
    "read": (2, 4),
    "convert": (3, 3),
    "extend": (2, 2),
    "report": (0, 1),
    "quote": (0, 1),
    "sleep": (1, 1),
    "attest": (1, 7),
}


def _number(text: str, line: int) -> int:
    try:
        return parse_number(text, f"line {line}")
    except ImageError as err:
        raise WorkloadError(str(err)) from None


def parse_data(spec: str, base: Path, line: int = 0) -> bytes:
    kind, sep, value = spec.partition(":")
    if not sep:
        raise WorkloadError(f"line {line}: data {spec!r} needs a kind: text:, hex:, fill: or file:")
    if kind == "text":
        return value.encode()
    if kind == "hex":
        try:
            return bytes.fromhex(value)
        except ValueError:
            raise WorkloadError(f"line {line}: {value!r} is not hex") from None
    if kind == "fill":
        byte, star, count = value.partition("*")
        if not star:
            raise WorkloadError(f"line {line}: fill is fill:BYTE*COUNT")
        b = _number(byte, line)
        if b > 255:
            raise WorkloadError(f"line {line}: fill byte {byte} is not 0..255")
        return bytes([b]) * _number(count, line)
    if kind == "file":
        try:
            return (base / value).read_bytes()
        except OSError as err:
            raise WorkloadError(f"line {line}: cannot read {value}: {err.strerror}") from None
    raise WorkloadError(f"line {line}: unknown data kind {kind!r}")


def parse_workload(text: str) -> list[Step]:
    steps: list[Step] = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(raw, comments=True)
        except ValueError as err:
            raise WorkloadError(f"line {number}: {err}") from None
        if not words:
            continue
        expect_error = None
        if len(words) >= 2 and words[-2] == "expect-error":
            expect_error = words[-1]
            words = words[:-2]
        op, args = words[0], tuple(words[1:])
        if op not in _ARITY:
            raise WorkloadError(f"line {number}: unknown step {op!r} (steps: {', '.join(sorted(_ARITY))})")
        low, high = _ARITY[op]
        if not low <= len(args) <= high:
            raise WorkloadError(f"line {number}: {op} takes {low}..{high} arguments, got {len(args)}")
        steps.append(Step(number, raw.strip(), op, args, expect_error))
    return steps


def load_workload(path: str | Path) -> list[Step]:
    try:
        return parse_workload(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise WorkloadError(f"cannot read {path}: {err.strerror}") from None


def _preview(data: bytes) -> str:
    head = data[:DATA_PREVIEW]
    text = head.decode("ascii") if head.isascii() and head.decode("ascii").isprintable() else head.hex()
    return text + ("…" if len(data) > DATA_PREVIEW else "")


class Runner:
    """Executes steps against a :class:`Td`; data files are found relative to ``base``."""

    def __init__(self, td: Td, base: Path = Path(".")) -> None:
        self.td = td
        self.base = base
        self._ops: dict[str, Callable[[Step], tuple[str, dict[str, object]]]] = {
            "accept": self._accept,
            "write": self._write,
            "read": self._read,
            "convert": self._convert,
            "extend": self._extend,
            "report": self._report,
            "quote": self._quote,
            "sleep": self._sleep,
            "attest": self._attest,
        }

    def _gpa(self, text: str, line: int) -> int:
        if text.startswith("shared:"):
            return self.td.shared(_number(text.removeprefix("shared:"), line))
        return _number(text, line)

    def _report_data(self, step: Step) -> bytes:
        data = parse_data(step.args[0], self.base, step.line) if step.args else b""
        if len(data) > 64:
            raise WorkloadError(f"line {step.line}: REPORTDATA is at most 64 bytes")
        return data.ljust(64, b"\0")

    def run_step(self, step: Step) -> StepResult:
        start = time.perf_counter()
        try:
            detail, values = self._ops[step.op](step)
        except (GuestError, WorkloadError) as err:
            reason = getattr(err, "reason", "WORKLOAD_ERROR")
            ms = (time.perf_counter() - start) * 1e3
            if step.expect_error is not None and reason == step.expect_error:
                return StepResult(step.line, step.text, True, f"failed as expected: {err}", ms, reason)
            return StepResult(step.line, step.text, False, str(err), ms, reason)
        ms = (time.perf_counter() - start) * 1e3
        if step.expect_error is not None:
            return StepResult(
                step.line, step.text, False, f"succeeded, expected {step.expect_error}: {detail}", ms
            )
        return StepResult(step.line, step.text, True, detail, ms, values=values)

    def _accept(self, step: Step) -> tuple[str, dict[str, object]]:
        gpa, size = _number(step.args[0], step.line), _number(step.args[1], step.line)
        if len(step.args) == 3 and step.args[2] != "allow-accepted":
            raise WorkloadError(f"line {step.line}: accept takes 'allow-accepted' as its third word")
        out = self.td.accept(gpa, size, strict=len(step.args) < 3)
        return (
            f"accepted {out.accepted_4k} 4K page(s), {out.accepted_2m} 2M page(s); "
            f"{out.already_accepted} already accepted",
            {"accepted_4k": out.accepted_4k, "accepted_2m": out.accepted_2m, "already": out.already_accepted},
        )

    def _write(self, step: Step) -> tuple[str, dict[str, object]]:
        gpa = self._gpa(step.args[0], step.line)
        data = parse_data(step.args[1], self.base, step.line)
        self.td.write(gpa, data)
        return f"wrote {len(data)} bytes at 0x{gpa:x}", {"bytes": len(data)}

    def _read(self, step: Step) -> tuple[str, dict[str, object]]:
        gpa, length = self._gpa(step.args[0], step.line), _number(step.args[1], step.line)
        expected = None
        if len(step.args) == 4:
            if step.args[2] != "expect":
                raise WorkloadError(f"line {step.line}: read GPA LEN [expect DATA]")
            expected = parse_data(step.args[3], self.base, step.line)
        elif len(step.args) == 3:
            raise WorkloadError(f"line {step.line}: read GPA LEN [expect DATA]")
        data = self.td.read(gpa, length)
        if expected is not None and data != expected:
            diff = next((i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b), None)
            at = diff if diff is not None else min(len(data), len(expected))
            raise WorkloadError(
                f"line {step.line}: read 0x{gpa:x}+{length} differs from the expected data at byte {at}: "
                f"got {_preview(data[at:])!r}"
            )
        verdict = " (as expected)" if expected is not None else ""
        return f"read {len(data)} bytes at 0x{gpa:x}: {_preview(data)!r}{verdict}", {"sha256": _sha256(data)}

    def _convert(self, step: Step) -> tuple[str, dict[str, object]]:
        to, gpa, size = step.args[0], _number(step.args[1], step.line), _number(step.args[2], step.line)
        if to == "shared":
            chunks = self.td.convert_to_shared(gpa, size)
            return f"converted 0x{gpa:x}+0x{size:x} to shared ({chunks} MapGPA chunk(s))", {"chunks": chunks}
        if to == "private":
            out = self.td.convert_to_private(gpa, size)
            return (
                f"converted 0x{gpa:x}+0x{size:x} to private and accepted {out.pages} page(s)",
                {"pages": out.pages},
            )
        raise WorkloadError(f"line {step.line}: convert shared|private GPA SIZE")

    def _extend(self, step: Step) -> tuple[str, dict[str, object]]:
        index = _number(step.args[0], step.line)
        data = parse_data(step.args[1], self.base, step.line)
        value = self.td.measure(index, data)
        return f"RTMR{index} = {value.hex()[:24]}…", {"rtmr": value.hex()}

    def _report(self, step: Step) -> tuple[str, dict[str, object]]:
        raw = self.td.report(self._report_data(step))
        body = decode_tdreport(raw).body
        rtmrs = (body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3)
        replayed = self.td.replayed_rtmrs()
        bad = [i for i in range(4) if rtmrs[i] != replayed[i]]
        if bad:
            raise WorkloadError(
                f"line {step.line}: RTMR{bad} in the TDREPORT differ from the event log replay"
            )
        return (
            f"TDREPORT: MRTD {body.mr_td.hex()[:24]}…, RTMRs match the log ({len(self.td.events)} events)",
            {"mrtd": body.mr_td.hex(), "rtmrs": [r.hex() for r in rtmrs], "tdreport_sha256": _sha256(raw)},
        )

    def _quote(self, step: Step) -> tuple[str, dict[str, object]]:
        quote = self.td.quote(self._report_data(step))
        return f"quote of {len(quote)} bytes", {"bytes": len(quote), "sha256": _sha256(quote)}

    def _attest(self, step: Step) -> tuple[str, dict[str, object]]:
        address, words = step.args[0], list(step.args[1:])
        options: dict[str, str] = {}
        while words:
            key = words.pop(0)
            if key not in ("policy", "secret", "expect") or not words or key in options:
                raise WorkloadError(
                    f"line {step.line}: attest VERIFIER [policy NAME] [secret PATH [expect DATA]]"
                )
            options[key] = words.pop(0)
        if "expect" in options and "secret" not in options:
            raise WorkloadError(f"line {step.line}: 'expect' checks a secret: give 'secret PATH' first")
        with Verifier(address) as verifier:
            attestation = verifier.attest(self.td, policy=options.get("policy", ""))
            detail = f"token ({attestation.ear_status}, TCB {attestation.tcb_status})"
            values: dict[str, object] = {
                "tcb_status": attestation.tcb_status,
                "ear_status": attestation.ear_status,
            }
            if "secret" in options:
                secret = verifier.fetch_secret(attestation, options["secret"])
                if "expect" in options and secret != parse_data(options["expect"], self.base, step.line):
                    raise WorkloadError(f"line {step.line}: the released secret is not the expected one")
                detail += f"; secret {options['secret']} released: {_preview(secret)!r}"
                values["secret_sha256"] = _sha256(secret)
        return detail, values

    def _sleep(self, step: Step) -> tuple[str, dict[str, object]]:
        seconds = float(step.args[0])
        time.sleep(seconds)
        return f"slept {seconds:g} s", {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
