"""``tdxsim pki init DIR``: arguments and a JSON-ready summary, ready to be wired into ``tdxsim``'s parser
(the files of docs/attestation.md §9, laid out by ``attest.intel.pcs_directory``).

Wiring: ``pki = sub.add_parser("pki", …); attest.intel.cli.add_arguments(pki)``; the chosen action is
``args.func(args) -> exit code`` (0 created; 2, with one line on stderr, for unusable arguments, an existing
PKI or a directory that cannot be created or written).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from attest.formats.collateral import TCB_STATUSES
from attest.intel.identity import SGX_TYPE
from attest.intel.pcs_directory import Pki, PkiError, PkiOptions, init_pki
from attest.intel.signed_collateral import rfc3339

EXIT_OK, EXIT_UNUSABLE = 0, 2


def summary(pki: Pki) -> dict[str, Any]:
    """What was created: directory, trust anchor (SHA-256 of its DER, as Intel's root is pinned), validity,
    platforms and the collateral file to hand to verifiers."""
    root = pki.root.certificate
    return {
        "directory": str(pki.directory),
        "simulated": True,
        "root_ca": {
            "file": str(pki.directory / "root_ca.pem"),
            "subject": root.subject.rfc4514_string(),
            "sha256": hashlib.sha256(pki.root_der).hexdigest(),
        },
        "collateral": str(pki.directory / "collateral.json"),
        "collateral_window": [pki.tcb_info_window[0], pki.tcb_info_window[1]],
        "collateral_window_utc": [rfc3339(pki.tcb_info_window[0]), rfc3339(pki.tcb_info_window[1])],
        "platforms": [
            {
                "index": p.index,
                "ppid": p.ppid.hex(),
                "pck_key": str(pki.directory / "platforms" / str(p.index) / "pck.key"),
                "pck_chain": str(pki.directory / "platforms" / str(p.index) / "pck_chain.pem"),
                "revoked": p.index in pki.options.revoked_platforms,
            }
            for p in pki.platforms
        ],
        "options": pki.options.to_json(),
    }


def options_from_args(args: argparse.Namespace) -> PkiOptions:
    return PkiOptions(
        now=args.now,
        platforms=args.platforms,
        seed=args.seed.encode() if args.seed is not None else None,
        collateral_validity=args.validity_days * 86_400,
        collateral_expired=args.expired,
        tcb_status=args.tcb_status,
        advisory_ids=tuple(args.advisory),
        qe_tcb_status=args.qe_tcb_status,
        revoked_platforms=tuple(args.revoke),
        wrong_issuer=args.wrong_issuer,
        sgx_type=args.sgx_type,
        **({"fmspc": args.fmspc.upper()} if args.fmspc else {}),
    )


def run_init(args: argparse.Namespace) -> int:
    try:
        pki = init_pki(args.directory, options_from_args(args))
    except PkiError as err:
        print(f"tdxsim pki init: {err}", file=sys.stderr)
        return EXIT_UNUSABLE
    out = summary(pki)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"simulated PCS in {out['directory']} (root sha256 {out['root_ca']['sha256']})")
        print(f"collateral {out['collateral']} valid {' .. '.join(out['collateral_window_utc'])}")
        for p in out["platforms"]:
            print(f"platform {p['index']}: pck {p['pck_chain']}{' (revoked)' if p['revoked'] else ''}")
    return EXIT_OK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="create a simulated Intel PCS (root, PCK certificates, CRLs, signed TCB Info / QE Identity)",
        description="Create a simulated Intel PCS in DIR. Everything it issues says it is a tdxsim "
        "simulation; quotes chained to its root verify only against root_ca.pem, never Intel's root.",
    )
    init.add_argument("directory", type=Path, metavar="DIR")
    init.add_argument("--platforms", type=int, default=1, help="host platforms (PCK leaves), default 1")
    init.add_argument("--now", type=int, default=None, help="anchor of validity windows, unix seconds")
    init.add_argument("--seed", default=None, help="deterministic keys, serials and PPIDs from this seed")
    init.add_argument("--validity-days", type=int, default=30, help="collateral validity, default 30 days")
    init.add_argument("--expired", action="store_true", help="collateral already expired at --now")
    init.add_argument("--tcb-status", choices=TCB_STATUSES, default="UpToDate", help="platform TCB level")
    init.add_argument("--advisory", action="append", default=[], help="advisory ID of the platform level")
    init.add_argument("--qe-tcb-status", choices=("UpToDate", "OutOfDate", "Revoked"), default="UpToDate")
    init.add_argument(
        "--revoke", type=int, action="append", default=[], help="list platform N in the PCK CRL"
    )
    init.add_argument("--wrong-issuer", action="store_true", help="sign collateral under a rogue root")
    init.add_argument(
        "--sgx-type",
        type=int,
        choices=(0, 1, 2),
        default=SGX_TYPE,
        help="PCK SGX type: 1 Scalable (default, as TDX platforms; Platform CA), 2 Scalable with Integrity "
        "(Platform CA), 0 Standard (Processor CA, no PlatformInstanceID/Configuration)",
    )
    init.add_argument(
        "--fmspc",
        default=None,
        metavar="HEX",
        help="the platform model's FMSPC, 12 hex digits (default the simulated model's 90C06F000000); PKIs "
        "made with one --seed and --now share their root's key: one simulated Intel, several platform models",
    )
    init.add_argument("--json", action="store_true", help="print one JSON object")
    init.set_defaults(func=run_init)
