"""Workload files: a human-writable list of guest steps that ``tdxsim guest run SCRIPT`` executes in a
launched TD, printing what happened at each step (docs/cli.md "``tdxsim guest``").

One step per line; ``#`` starts a comment; arguments are split like a shell (quotes group). Numbers are
decimal, ``0x`` hex, or sizes with K/M/G suffixes. A GPA is private unless written ``shared:GPA`` (the
library sets the TD's shared bit, bit 47 or 51). DATA is one of ``text:STRING``, ``hex:HEX``,
``fill:BYTE*COUNT`` (e.g. ``fill:0xab*4K``; COUNT at most 64 MiB) or ``file:PATH`` (relative to the workload
file).

The whole file is checked when it is loaded, before the TD is launched: a number that does not parse or does
not fit in 64 bits, bad DATA (odd hex, a fill byte over 255, a ``file:`` that cannot be read), a ``read`` LEN
of 0, REPORTDATA over 64 bytes, an unknown keyword or a ``sleep`` outside 0..86400 is an error naming its line
(``tdxsim guest`` exits 2). What the TD or the host refuses while a step runs fails that step.

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
``sleep SECONDS``                           wait 0..86400 s, fractions allowed (the TD stays alive); fails
                                            with ``LIFELINE_LOST`` the moment the host ends the lifeline
``attest VERIFIER [policy NAME]``           remote attestation at a ``tdxsim verifier``: nonce, quote bound to
``[secret PATH [expect DATA]]``             a fresh key, token; with ``secret`` the resource released to the
                                            token, opened with the TD's key (``expect`` checks it)
``kbs URL resource PATH [expect DATA]``     the KBS protocol at ``tdxsim verifier --kbs-listen`` (or any KBS):
                                            auth, attest with a fresh key, the resource PATH
                                            (repository/type/tag) as a JWE opened with it (``guest.kbs``)
==========================================  ==================================================================

VERIFIER is ``HOST:PORT``, several replicas as a comma list (``10.0.0.1:50054,10.0.0.2:50054``: calls go
round-robin to those that answer), a DNS name whose records are the replicas, or ``-``: the verifiers
``tdxsim guest --verifier`` names.

Any step may end with ``expect-error REASON``: it then passes only if it fails with that ErrorInfo reason
(e.g. ``read 0x800000 16 expect-error VE_PENDING_PAGE``, ``quote expect-error QGS_UNAVAILABLE``).

The top :data:`guest.td.DEFAULT_BOUNCE_BYTES` (2 MiB) of guest memory are the library's shared bounce pool and
its first private free page holds the report scratch page; workloads should use other GPAs.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import AttestError
from attest.formats.tdreport import decode_tdreport
from guest.attestation import Attestation, Verifier
from guest.errors import AttestationRefused, GuestError, malformed_response
from guest.image import ImageError, parse_number
from guest.kbs import KbsClient
from guest.td import Td
from wire.tls import TlsConfig

DATA_PREVIEW = 32
#: The largest ``fill:`` a workload may ask for (64 MiB, the guest's largest message).
MAX_FILL = 64 << 20
#: The longest ``sleep`` (a day); longer waits are the keep-alive mode's job.
MAX_SLEEP = 86400.0
REPORT_DATA_SIZE = 64
#: ``attest -``: the verifier replicas the runner was given (``tdxsim guest --verifier``).
DEFAULT_VERIFIER = "-"


class WorkloadError(ValueError):
    """A line of the workload file cannot be understood (raised before the TD is launched), or a step's
    own check failed while it ran (an ``expect`` that did not match)."""


@dataclass(frozen=True)
class Data:
    """A DATA argument, checked when the workload is parsed. Its bytes are made when the step runs, so a
    workload of many large ``fill:`` steps does not hold them all; a ``file:`` is read then."""

    spec: str
    kind: str
    size: int
    literal: bytes = b""
    byte: int = 0
    path: Path | None = None

    def load(self, line: int = 0) -> bytes:
        if self.kind == "fill":
            return bytes([self.byte]) * self.size
        if self.path is not None:
            try:
                return self.path.read_bytes()
            except OSError as err:
                raise WorkloadError(f"line {line}: cannot read {self.path}: {err.strerror}") from None
            except ValueError:  # a NUL in the name
                raise WorkloadError(f"line {line}: {str(self.path)!r} is not a usable file name") from None
        return self.literal


@dataclass(frozen=True)
class Gpa:
    value: int
    shared: bool = False


@dataclass(frozen=True)
class Accept:
    gpa: int
    size: int
    allow_accepted: bool = False


@dataclass(frozen=True)
class Write:
    gpa: Gpa
    data: Data


@dataclass(frozen=True)
class Read:
    gpa: Gpa
    length: int
    expect: Data | None = None


@dataclass(frozen=True)
class Convert:
    to: str
    gpa: int
    size: int


@dataclass(frozen=True)
class Extend:
    index: int
    data: Data


@dataclass(frozen=True)
class Report:
    data: Data | None = None


@dataclass(frozen=True)
class Quote:
    data: Data | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Attest:
    verifier: str
    policy: str = ""
    secret: str | None = None
    expect: Data | None = None


@dataclass(frozen=True)
class Kbs:
    url: str
    resource: str
    expect: Data | None = None


Params = Accept | Write | Read | Convert | Extend | Report | Quote | Sleep | Attest | Kbs


@dataclass(frozen=True)
class Step:
    line: int
    text: str
    op: str
    args: tuple[str, ...]
    params: Params
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


# ---- parsing: every argument is checked here, before a TD exists ------------------------------------------


def _number(text: str, line: int, what: str = "") -> int:
    try:
        return parse_number(text, f"line {line}" + (f": {what}" if what else ""))
    except ImageError as err:
        raise WorkloadError(str(err)) from None


def _gpa(text: str, line: int) -> Gpa:
    if text.startswith("shared:"):
        return Gpa(_number(text.removeprefix("shared:"), line, "GPA"), shared=True)
    return Gpa(_number(text, line, "GPA"))


def parse_spec(spec: str, base: Path = Path("."), line: int = 0) -> Data:
    """Check a DATA argument (``file:`` paths start at ``base``) without making its bytes."""
    kind, sep, value = spec.partition(":")
    if not sep:
        raise WorkloadError(f"line {line}: data {spec!r} needs a kind: text:, hex:, fill: or file:")
    if kind == "text":
        try:
            literal = value.encode()
        except UnicodeEncodeError:
            raise WorkloadError(f"line {line}: text is not valid unicode") from None
        return Data(spec, kind, len(literal), literal=literal)
    if kind == "hex":
        try:
            literal = bytes.fromhex(value)
        except ValueError:
            raise WorkloadError(f"line {line}: {value!r} is not hex") from None
        return Data(spec, kind, len(literal), literal=literal)
    if kind == "fill":
        byte, star, count = value.partition("*")
        if not star:
            raise WorkloadError(f"line {line}: fill is fill:BYTE*COUNT")
        b = _number(byte, line, "fill byte")
        if b > 255:
            raise WorkloadError(f"line {line}: fill byte {byte} is not 0..255")
        size = _number(count, line, "fill count")
        if size > MAX_FILL:
            raise WorkloadError(f"line {line}: fill count {count} is over the 64 MiB limit")
        return Data(spec, kind, size, byte=b)
    if kind == "file":
        path = base / value
        try:
            with path.open("rb") as handle:
                size = handle.seek(0, 2)
        except OSError as err:
            raise WorkloadError(f"line {line}: cannot read {value}: {err.strerror}") from None
        except ValueError:  # a NUL in the name
            raise WorkloadError(f"line {line}: {value!r} is not a usable file name") from None
        return Data(spec, kind, size, path=path)
    raise WorkloadError(f"line {line}: unknown data kind {kind!r}")


def parse_data(spec: str, base: Path = Path("."), line: int = 0) -> bytes:
    """The bytes of a DATA argument."""
    return parse_spec(spec, base, line).load(line)


def _report_data(args: tuple[str, ...], line: int, base: Path) -> Data | None:
    if not args:
        return None
    data = parse_spec(args[0], base, line)
    if data.size > REPORT_DATA_SIZE:
        raise WorkloadError(f"line {line}: REPORTDATA is at most 64 bytes, {args[0]!r} is {data.size}")
    return data


def _parse_accept(args: tuple[str, ...], line: int, base: Path) -> Accept:
    if len(args) == 3 and args[2] != "allow-accepted":
        raise WorkloadError(f"line {line}: accept GPA SIZE [allow-accepted], not {args[2]!r}")
    return Accept(_number(args[0], line, "GPA"), _number(args[1], line, "SIZE"), len(args) == 3)


def _parse_write(args: tuple[str, ...], line: int, base: Path) -> Write:
    return Write(_gpa(args[0], line), parse_spec(args[1], base, line))


def _parse_read(args: tuple[str, ...], line: int, base: Path) -> Read:
    if len(args) == 3 or (len(args) == 4 and args[2] != "expect"):
        raise WorkloadError(f"line {line}: read GPA LEN [expect DATA]")
    length = _number(args[1], line, "LEN")
    if length < 1:
        raise WorkloadError(f"line {line}: read LEN must be at least 1")
    expect = parse_spec(args[3], base, line) if len(args) == 4 else None
    return Read(_gpa(args[0], line), length, expect)


def _parse_convert(args: tuple[str, ...], line: int, base: Path) -> Convert:
    if args[0] not in ("shared", "private"):
        raise WorkloadError(f"line {line}: convert shared|private GPA SIZE, not {args[0]!r}")
    return Convert(args[0], _number(args[1], line, "GPA"), _number(args[2], line, "SIZE"))


def _parse_extend(args: tuple[str, ...], line: int, base: Path) -> Extend:
    return Extend(_number(args[0], line, "INDEX"), parse_spec(args[1], base, line))


def _parse_report(args: tuple[str, ...], line: int, base: Path) -> Report:
    return Report(_report_data(args, line, base))


def _parse_quote(args: tuple[str, ...], line: int, base: Path) -> Quote:
    return Quote(_report_data(args, line, base))


def _parse_sleep(args: tuple[str, ...], line: int, base: Path) -> Sleep:
    try:
        seconds = float(args[0])
    except ValueError:
        raise WorkloadError(f"line {line}: sleep SECONDS: {args[0]!r} is not a number") from None
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_SLEEP):
        raise WorkloadError(f"line {line}: sleep SECONDS must be 0..{MAX_SLEEP:g}, got {args[0]!r}")
    return Sleep(seconds)


def _parse_attest(args: tuple[str, ...], line: int, base: Path) -> Attest:
    words = list(args[1:])
    options: dict[str, str] = {}
    while words:
        key = words.pop(0)
        if key not in ("policy", "secret", "expect") or not words or key in options:
            raise WorkloadError(f"line {line}: attest VERIFIER [policy NAME] [secret PATH [expect DATA]]")
        options[key] = words.pop(0)
    if "expect" in options and "secret" not in options:
        raise WorkloadError(f"line {line}: 'expect' checks a secret: give 'secret PATH' first")
    expect = parse_spec(options["expect"], base, line) if "expect" in options else None
    return Attest(args[0], options.get("policy", ""), options.get("secret"), expect)


def _parse_kbs(args: tuple[str, ...], line: int, base: Path) -> Kbs:
    usage = f"line {line}: kbs URL resource REPOSITORY/TYPE/TAG [expect DATA]"
    if len(args) not in (3, 5) or args[1] != "resource" or (len(args) == 5 and args[3] != "expect"):
        raise WorkloadError(usage)
    if not args[0].startswith(("http://", "https://")):
        raise WorkloadError(f"{usage}: URL must be http:// or https://")
    parts = args[2].split("/")
    if len(parts) != 3 or not all(parts):
        raise WorkloadError(f"{usage}: the resource is three parts")
    return Kbs(args[0], args[2], parse_spec(args[4], base, line) if len(args) == 5 else None)


_Parser = Callable[[tuple[str, ...], int, Path], Params]
_STEPS: dict[str, tuple[int, int, _Parser]] = {
    "accept": (2, 3, _parse_accept),
    "write": (2, 2, _parse_write),
    "read": (2, 4, _parse_read),
    "convert": (3, 3, _parse_convert),
    "extend": (2, 2, _parse_extend),
    "report": (0, 1, _parse_report),
    "quote": (0, 1, _parse_quote),
    "sleep": (1, 1, _parse_sleep),
    "attest": (1, 7, _parse_attest),
    "kbs": (3, 5, _parse_kbs),
}


def parse_workload(text: str, base: Path = Path(".")) -> list[Step]:
    """Every step of a workload, its arguments checked (``file:`` paths start at ``base``); any problem is a
    :class:`WorkloadError` naming the line."""
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
            if not expect_error:
                raise WorkloadError(f"line {number}: expect-error needs a REASON")
        if not words:
            raise WorkloadError(f"line {number}: expect-error follows a step")
        op, args = words[0], tuple(words[1:])
        if op not in _STEPS:
            raise WorkloadError(f"line {number}: unknown step {op!r} (steps: {', '.join(sorted(_STEPS))})")
        low, high, parse = _STEPS[op]
        if not low <= len(args) <= high:
            raise WorkloadError(f"line {number}: {op} takes {low}..{high} arguments, got {len(args)}")
        steps.append(Step(number, raw.strip(), op, args, parse(args, number, base), expect_error))
    return steps


def load_workload(path: str | Path) -> list[Step]:
    """Read and check a workload file; ``file:`` data is found relative to it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise WorkloadError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise WorkloadError(f"{path}: not UTF-8 text") from None
    return parse_workload(text, path.parent)


# ---- running: the steps are already checked; what fails here is the TD or the host ----------------------


def _preview(data: bytes) -> str:
    head = data[:DATA_PREVIEW]
    text = head.decode("ascii") if head.isascii() and head.decode("ascii").isprintable() else head.hex()
    return text + ("…" if len(data) > DATA_PREVIEW else "")


class Runner:
    """Executes parsed steps against a :class:`Td`."""

    def __init__(
        self,
        td: Td,
        *,
        tls: TlsConfig | None = None,
        verifiers: Sequence[str] = (),
        evidence: Path | None = None,
    ) -> None:
        self.td = td
        #: Where ``attest`` steps leave their evidence for other tools: quote.bin, eventlog.bin, token.jwt,
        #: verify_at (the unix time the verifier checked it at); the last attest step's wins, and a refused
        #: one leaves no token.jwt.
        self.evidence = evidence
        #: How ``attest`` steps reach their verifier: plaintext, or TLS / mTLS.
        self.tls = tls
        #: The verifier replicas an ``attest -`` step uses.
        self.verifiers = list(verifiers)

    def _address(self, gpa: Gpa) -> int:
        return self.td.shared(gpa.value) if gpa.shared else gpa.value

    @staticmethod
    def _report_data(data: Data | None, line: int) -> bytes:
        raw = data.load(line) if data is not None else b""
        if len(raw) > REPORT_DATA_SIZE:  # a file that grew after the workload was parsed
            raise WorkloadError(f"line {line}: REPORTDATA is at most 64 bytes")
        return raw.ljust(REPORT_DATA_SIZE, b"\0")

    def run_step(self, step: Step) -> StepResult:
        start = time.perf_counter()
        try:
            detail, values = self._run(step.params, step.line)
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

    def _run(self, params: Params, line: int) -> tuple[str, dict[str, object]]:
        match params:
            case Accept():
                return self._accept(params)
            case Write():
                return self._write(params, line)
            case Read():
                return self._read(params, line)
            case Convert():
                return self._convert(params)
            case Extend():
                return self._extend(params, line)
            case Report():
                return self._report(params, line)
            case Quote():
                return self._quote(params, line)
            case Sleep():
                self.td.sleep(params.seconds)  # TdGone the moment the lifeline ends
                return f"slept {params.seconds:g} s", {}
            case Attest():
                return self._attest(params, line)
            case Kbs():
                return self._kbs(params, line)

    def _accept(self, p: Accept) -> tuple[str, dict[str, object]]:
        out = self.td.accept(p.gpa, p.size, strict=not p.allow_accepted)
        return (
            f"accepted {out.accepted_4k} 4K page(s), {out.accepted_2m} 2M page(s); "
            f"{out.already_accepted} already accepted",
            {"accepted_4k": out.accepted_4k, "accepted_2m": out.accepted_2m, "already": out.already_accepted},
        )

    def _write(self, p: Write, line: int) -> tuple[str, dict[str, object]]:
        gpa, data = self._address(p.gpa), p.data.load(line)
        self.td.write(gpa, data)
        return f"wrote {len(data)} bytes at 0x{gpa:x}", {"bytes": len(data)}

    def _read(self, p: Read, line: int) -> tuple[str, dict[str, object]]:
        gpa = self._address(p.gpa)
        expected = p.expect.load(line) if p.expect is not None else None
        data = self.td.read(gpa, p.length)
        if expected is not None and data != expected:
            diff = next((i for i, (a, b) in enumerate(zip(data, expected, strict=False)) if a != b), None)
            at = diff if diff is not None else min(len(data), len(expected))
            raise WorkloadError(
                f"line {line}: read 0x{gpa:x}+{p.length} differs from the expected data at byte {at}: "
                f"got {_preview(data[at:])!r}"
            )
        verdict = " (as expected)" if expected is not None else ""
        return f"read {len(data)} bytes at 0x{gpa:x}: {_preview(data)!r}{verdict}", {"sha256": _sha256(data)}

    def _convert(self, p: Convert) -> tuple[str, dict[str, object]]:
        if p.to == "shared":
            chunks = self.td.convert_to_shared(p.gpa, p.size)
            return f"converted 0x{p.gpa:x}+0x{p.size:x} to shared ({chunks} MapGPA chunk(s))", {
                "chunks": chunks
            }
        out = self.td.convert_to_private(p.gpa, p.size)
        return (
            f"converted 0x{p.gpa:x}+0x{p.size:x} to private and accepted {out.pages} page(s)",
            {"pages": out.pages},
        )

    def _extend(self, p: Extend, line: int) -> tuple[str, dict[str, object]]:
        value = self.td.measure(p.index, p.data.load(line))
        return f"RTMR{p.index} = {value.hex()[:24]}…", {"rtmr": value.hex()}

    def _report(self, p: Report, line: int) -> tuple[str, dict[str, object]]:
        raw = self.td.report(self._report_data(p.data, line))
        try:
            body = decode_tdreport(raw).body
        except AttestError as err:  # the host's bytes: a TDREPORT no TDX module would write
            raise malformed_response(f"TDREPORT: {err}") from None
        rtmrs = (body.rtmr0, body.rtmr1, body.rtmr2, body.rtmr3)
        replayed = self.td.replayed_rtmrs()
        bad = [i for i in range(4) if rtmrs[i] != replayed[i]]
        if bad:
            raise WorkloadError(f"line {line}: RTMR{bad} in the TDREPORT differ from the event log replay")
        return (
            f"TDREPORT: MRTD {body.mr_td.hex()[:24]}…, RTMRs match the log ({len(self.td.events)} events)",
            {"mrtd": body.mr_td.hex(), "rtmrs": [r.hex() for r in rtmrs], "tdreport_sha256": _sha256(raw)},
        )

    def _quote(self, p: Quote, line: int) -> tuple[str, dict[str, object]]:
        quote = self.td.quote(self._report_data(p.data, line))
        return f"quote of {len(quote)} bytes", {"bytes": len(quote), "sha256": _sha256(quote)}

    def _keep_evidence(self, attestation: Attestation) -> None:
        assert self.evidence is not None
        _write_evidence(
            self.evidence,
            {
                "quote.bin": attestation.quote,
                "eventlog.bin": attestation.event_log,
                "token.jwt": attestation.token.encode(),
                "verify_at": f"{int(time.time())}\n".encode(),
            },
        )

    def _keep_refused_evidence(self, refused: AttestationRefused) -> None:
        """The evidence the verifier refused, to check why: no token (an earlier step's is removed)."""
        assert self.evidence is not None
        _write_evidence(
            self.evidence,
            {
                "quote.bin": refused.quote,
                "eventlog.bin": refused.event_log,
                "verify_at": f"{int(time.time())}\n".encode(),
            },
            stale=("token.jwt",),
        )

    def _attest(self, p: Attest, line: int) -> tuple[str, dict[str, object]]:
        if p.verifier == DEFAULT_VERIFIER and not self.verifiers:
            raise WorkloadError(f"line {line}: 'attest -' needs the verifiers given with --verifier")
        address = self.verifiers if p.verifier == DEFAULT_VERIFIER else p.verifier
        with Verifier(address, self.tls) as verifier:
            try:
                attestation = verifier.attest(self.td, policy=p.policy)
            except AttestationRefused as refused:
                if self.evidence is not None and refused.quote:
                    self._keep_refused_evidence(refused)
                raise
            detail = f"token ({attestation.ear_status}, TCB {attestation.tcb_status})"
            if self.evidence is not None:
                self._keep_evidence(attestation)
            values: dict[str, object] = {
                "tcb_status": attestation.tcb_status,
                "ear_status": attestation.ear_status,
            }
            if p.secret is not None:
                secret = verifier.fetch_secret(attestation, p.secret)
                if p.expect is not None and secret != p.expect.load(line):
                    raise WorkloadError(f"line {line}: the released secret is not the expected one")
                detail += f"; secret {p.secret} released: {_preview(secret)!r}"
                values["secret_sha256"] = _sha256(secret)
        return detail, values

    def _kbs(self, p: Kbs, line: int) -> tuple[str, dict[str, object]]:
        with KbsClient(p.url, self.tls) as client:
            attestation = client.attest(self.td)
            secret = client.get_resource(p.resource, attestation)
        if p.expect is not None and secret != p.expect.load(line):
            raise WorkloadError(f"line {line}: the released secret is not the expected one")
        return (
            f"kbs token; resource {p.resource} released: {_preview(secret)!r}",
            {"secret_sha256": _sha256(secret)},
        )


def _write_evidence(folder: Path, files: dict[str, bytes], stale: Sequence[str] = ()) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():  # 0600 and never through a symlink: token.jwt is a bearer token
            fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                out.write(data)
        for name in stale:
            (folder / name).unlink(missing_ok=True)
    except OSError as err:
        raise WorkloadError(f"cannot keep the evidence in {folder}: {err.strerror or err}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
