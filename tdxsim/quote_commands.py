"""``tdxsim quote inspect|verify``: offline use of the quote codec and the DCAP verifier (docs/cli.md).

A quote file holds the binary quote or its hex text (``0x`` and line breaks allowed). Collateral comes from a
``QuoteCollateralV3`` file (``--collateral``) or, as real verifiers get it, from a PCCS or Intel's PCS by URL
(``--pccs``, docs/attestation.md §17). Without ``--policy`` the verdict is dcap-qvl's: a DEBUG TD is rejected
("Debug mode is enabled"); with one, the policy decides (``allow_debug``). Both commands say when the PCK
chain is a tdxsim simulation.

Exit codes (as go-tdx-guest's ``check``): 0 accepted (or inspected), 1 rejected, 2 unusable input
or arguments. Unusable input includes malformed collateral (any member that does not parse or has the wrong
shape, as ``attest.formats.collateral.parse_collateral`` decides); collateral that is well formed but fails
verification (signature, chain, expiry, revocation) is a rejection. ``--json`` prints one JSON object for
scripts (``verdict`` ``accepted``, ``rejected`` or ``unusable``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from attest.errors import AttestError
from attest.formats.quote import decode_quote, quote_bytes
from attest.verifier import offline
from attest.verifier.appraise import Evidence, PolicyError, appraise, policy_from_json
from attest.verifier.dcap.pccs_client import PccsClient, PccsError
from attest.verifier.dcap.pck_platform import pck_platform
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

EXIT_ACCEPTED, EXIT_REJECTED, EXIT_UNUSABLE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="quote_command", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="decode a quote and print its fields (no verification)")
    inspect.add_argument(
        "file",
        type=Path,
        help="quote file: binary, as a TD's GetQuote returns it, or hex (0x, newlines allowed)",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=run_inspect)
    verify = sub.add_parser(
        "verify",
        help="verify a quote with DCAP collateral",
        description="Verify a TDX DCAP quote in Intel's step order (header, collateral signatures and "
        "windows, CRLs, PCK chain to a trust anchor, QE report and identity, quote signature, TCB level). "
        "Without --policy a DEBUG TD is rejected, as dcap-qvl does; a policy may allow it (allow_debug). "
        "Exit 0 accepted, 1 rejected (including collateral that fails its signature, chain or validity "
        "window), 2 unusable input (unreadable files, malformed quote, collateral or policy).",
    )
    verify.add_argument("file", type=Path, help="quote file, binary or hex")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("--collateral", type=Path, help="dcap-qvl QuoteCollateralV3 JSON")
    source.add_argument(
        "--pccs",
        metavar="URL",
        help="fetch the collateral for the quote's FMSPC from a PCCS or Intel's PCS (http(s)://HOST:PORT, "
        "e.g. what 'tdxsim pcs serve' prints, or https://api.trustedservices.intel.com)",
    )
    verify.add_argument("--at", type=int, default=None, help="verification time, unix seconds (default: now)")
    verify.add_argument(
        "--root",
        type=Path,
        action="append",
        default=[],
        help="trust anchor, PEM or DER (repeatable; default: Intel's SGX Root CA only)",
    )
    verify.add_argument(
        "--policy",
        type=Path,
        help="appraise the verified quote with a verifier policy JSON (reference values, DEBUG, TCB "
        "statuses, minimum TEE_TCB_SVN), which then decides on DEBUG; freshness cannot be checked offline "
        "and is skipped",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.set_defaults(func=run_verify)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise _Unusable(f"cannot read {path}: {err.strerror}") from err


def _read_text(path: Path) -> str:
    try:
        return _read(path).decode()
    except UnicodeDecodeError:
        raise _Unusable(f"{path}: not UTF-8 text") from None


class _Unusable(Exception):
    pass


def _emit(result: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(lines))


def run_inspect(args: argparse.Namespace) -> int:
    try:
        result = offline.inspect(_read(args.file))
    except (_Unusable, AttestError) as err:
        return _fail(args, str(err))
    report = result["report"]
    header = result["header"]
    lines = [f"quote v{header['version']}, body type {result['body_type']}, tee {header['tee_type']}"]
    lines += [f"  {name:<16} {value}" for name, value in report.items()]
    if result.get("pck"):
        lines.append(f"  fmspc            {result['pck']['fmspc']}")
    lines.append(f"  pck chain root   {_root_line(result['pck_chain_root'])}")
    _emit(result, args.json, lines)
    return EXIT_ACCEPTED


def run_verify(args: argparse.Namespace) -> int:
    try:
        quote = _read(args.file)
        collateral = _read_text(args.collateral) if args.collateral is not None else _fetch(args.pccs, quote)
        roots = [_read(p) for p in args.root] or [INTEL_SGX_ROOT_CA_PEM]
        at = args.at if args.at is not None else int(time.time())
        result = offline.verify(quote, collateral, at, roots, allow_debug=args.policy is not None)
        if args.policy is not None and result["verdict"] == "accepted":
            _appraise(result, quote, _read_text(args.policy))
    except (_Unusable, AttestError, PolicyError) as err:
        return _fail(args, str(err))
    accepted = result["verdict"] == "accepted"
    lines = [f"{result['verdict']}: TCB status {result['tcb_status']}"]
    if result["simulated"]:
        lines.append("  simulated evidence: the PCK chain is a tdxsim simulation, not Intel's")
    if result["advisory_ids"]:
        lines.append(f"  advisories: {', '.join(result['advisory_ids'])}")
    if not accepted:
        lines.append(f"  error: {result.get('error')}")
    lines.append(f"  mr_td {result['report']['mr_td']}")
    _emit(result, args.json, lines)
    return EXIT_ACCEPTED if accepted else EXIT_REJECTED


def _fetch(url: str, quote: bytes) -> str:
    """The QuoteCollateralV3 JSON of the quote's FMSPC, fetched from the PCCS at ``url`` (docs/attestation.md
    §17); an unreachable PCCS or one without that FMSPC makes the input unusable (exit 2)."""
    try:
        platform = pck_platform(decode_quote(quote_bytes(quote)))
        return PccsClient(url).fetch(platform.fmspc, platform.pck_ca).json_text
    except (PccsError, ValueError) as err:
        raise _Unusable(f"--pccs: {err}") from None


def _root_line(root: dict[str, Any]) -> str:
    if root["root"] == "intel":
        return "Intel SGX Root CA (Intel's)"
    if root["simulated"]:
        return "simulated: a tdxsim root, not Intel's (verifies only against that PKI's root_ca.pem)"
    return f"unknown: {root['subject']}"


def _appraise(result: dict[str, Any], quote: bytes, policy_text: str) -> None:
    """Apply a verifier policy to a verified quote, offline: every mismatch is listed."""
    policy = policy_from_json("offline", policy_text)
    if policy.reference_value_sets:
        raise _Unusable("named reference-value sets live in a verifier's database; inline the values")
    options = replace(policy.options, require_nonce=False)
    body = decode_quote(quote_bytes(quote)).body
    evidence = Evidence(body, result["tcb_status"], tuple(result["advisory_ids"]))
    appraisal = appraise(evidence, options)
    result["appraisal"] = {"checked": list(appraisal.checked_fields), "mismatches": list(appraisal.reasons)}
    if not appraisal.ok:
        first = appraisal.mismatches[0]
        result.update(verdict="rejected", error=f"appraisal: {first.reason}: {first.message}")


def _fail(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"verdict": "unusable", "error": message}))
    print(f"tdxsim quote: {message}", file=sys.stderr)
    return EXIT_UNUSABLE
