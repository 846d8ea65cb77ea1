"""``tdxsim guest``: run a TD guest process against a host.

    tdxsim guest --host ADDR --image IMAGE.json [--name NAME] [--json]             launch, wait for Ctrl-C
    tdxsim guest --host ADDR --image IMAGE.json [--name NAME] [--json] run SCRIPT  launch, run, exit
    tdxsim guest --image IMAGE.json [--json] mrtd                                 the image's MRTD, offline
    tdxsim guest --host ADDR --image IMAGE.json --tsm DIR                         configfs-tsm at DIR

The guest launches its TD from the image (``HostService.LaunchTd``: measured launch, guest.image documents the
format), attaches as its guest (the lifeline: when this process ends, however it ends, the host destroys the
TD and frees its KeyID and pages) and either waits or runs the workload file (guest.workload documents the
steps), printing one line per step. ``--json`` prints one JSON document instead: the TD (id, HKID, MRTD,
credential in keep-alive mode) and every step with its result.

Launching is the host operator's act: the guest presents the host's admin credential for ``LaunchTd``
(``--admin-credential FILE``, else the file ``$TDXSIM_ADMIN_CREDENTIAL_FILE`` names; the host printed its
path as ``admin credential: PATH``), then speaks only with its own TD's credential.

``--verifier ADDR`` (repeatable, or a comma list; a DNS name with several records works too) names the
verifier replicas that workload steps written ``attest -`` use: calls go round-robin to the replicas that
answer, so losing one costs only the calls in flight on it (docs/fleet.md).

``--tls-ca PEM`` reaches the host, and the verifier of ``attest`` steps, over TLS trusting that CA; add
``--tls-cert PEM --tls-key PEM`` for servers that require client certificates (mTLS).

Exit status: 0 all steps passed; 1 a step failed; 2 bad image or workload, or the host refused the launch;
130 interrupted (Ctrl-C or SIGTERM). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from attest.errors import AttestError
from attest.formats.tdreport import decode_tdreport
from guest import workload
from guest.errors import GuestError, malformed_response
from guest.image import ImageError, expected_mrtd, load_image
from guest.td import Td
from guest.workload import Runner, StepResult, WorkloadError, load_workload
from wire import credentials, tls
from wire.balancing import split_addresses

EXIT_STEP_FAILED = 1
EXIT_SETUP = 2
EXIT_INTERRUPTED = 130


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", metavar="ADDR", help="the host's address (HOST:PORT); not needed for mrtd")
    parser.add_argument("--image", required=True, metavar="IMAGE.json", help="TD image to launch")
    parser.add_argument("--name", default="", help="TD name shown by the host (default: the image's)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument(
        "--tsm",
        metavar="DIR",
        help="serve Linux's configfs-tsm tree (/sys/kernel/config/tsm) at DIR through FUSE, backed by the "
        "TD: reading report/NAME/outblob returns a DCAP quote; runs until Ctrl-C, then unmounts",
    )
    parser.add_argument(
        "--verifier",
        action="append",
        default=[],
        metavar="ADDR[,ADDR…]",
        help="verifier replica(s) for workload steps 'attest -': repeatable or a comma list; calls go "
        "round-robin to those that answer",
    )
    parser.add_argument(
        "--evidence",
        metavar="DIR",
        help="with run: leave the last attest step's evidence in DIR for other tools: quote.bin, "
        "eventlog.bin, token.jwt and verify_at (the unix time the verifier checked it); when the "
        "verifier refused it, no token.jwt",
    )
    parser.add_argument(
        "--hold",
        action="store_true",
        help="with run: after the workload, print the report and keep the TD until stdin reaches end of "
        "file, so a launcher can look at it from the host side",
    )
    credentials.add_client_argument(parser)
    tls.add_client_arguments(parser)
    sub = parser.add_subparsers(dest="guest_command", metavar="COMMAND")
    run_parser = sub.add_parser(
        "run",
        help="run a workload file in the launched TD, then exit",
        description=workload.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_parser.add_argument("script", metavar="SCRIPT", help="workload file (format above)")
    sub.add_parser(
        "mrtd",
        help="print the MRTD a TD launched from the image will have (no host needed): the reference value "
        "a verifier policy expects",
    )


def _interrupt_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _fail(message: str) -> int:
    print(f"tdxsim guest: {message}", file=sys.stderr)
    return EXIT_SETUP


def run(args: argparse.Namespace) -> int:
    _interrupt_on_sigterm()
    try:
        image = load_image(args.image)
        steps = load_workload(args.script) if args.guest_command == "run" else None
    except (ImageError, WorkloadError) as err:
        return _fail(str(err))
    if args.guest_command == "mrtd":
        mrtd = expected_mrtd(image.image).hex()
        print(json.dumps({"mr_td": mrtd}) if args.json else mrtd)
        return 0
    if not args.host:
        return _fail("--host ADDR is required to launch a TD")
    if steps is not None and not args.verifier:
        unnamed = [
            s.line
            for s in steps
            if isinstance(s.params, workload.Attest) and s.params.verifier == workload.DEFAULT_VERIFIER
        ]
        if unnamed:
            return _fail(f"workload line {unnamed[0]}: 'attest -' needs --verifier ADDR")
    if args.tsm and (steps is not None or not os.path.isdir(args.tsm)):
        return _fail(f"--tsm {args.tsm}: " + ("takes no command" if steps else "not a directory"))
    try:
        tls_config = tls.client_config_from_args(args)
        admin = credentials.client_admin_credential(args.admin_credential)
    except (tls.TlsError, credentials.CredentialError) as err:
        return _fail(str(err))
    try:
        td, launched = Td.launch(
            args.host, image.image, args.name or image.name, admin_credential=admin, tls=tls_config
        )
    except GuestError as err:
        return _fail(f"launch refused by {args.host}: {err}")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    summary: dict[str, object] = {"td_id": launched.td_id, "hkid": launched.hkid, "host": args.host}
    results: list[StepResult] = []
    interrupted = False
    held: dict[str, object] | None = None
    try:
        summary["mrtd"] = _mrtd(td)
        if args.tsm:
            return _serve_tsm(td, summary, args.tsm, args.json)
        if steps is None:
            return _keep_alive(td, summary, launched.credential, args.json)
        if not args.json:
            print(f"TD {launched.td_id} launched (HKID {launched.hkid}, MRTD {str(summary['mrtd'])[:24]}…)")
        evidence = Path(args.evidence) if args.evidence else None
        runner = Runner(td, tls=tls_config, verifiers=split_addresses(args.verifier), evidence=evidence)
        for step in steps:
            result = runner.run_step(step)
            results.append(result)
            if not args.json:
                mark = "ok  " if result.ok else "FAIL"
                print(f"{mark} line {result.line:<4} {result.step}\n       {result.detail}", flush=True)
            if not result.ok:
                break
        if args.hold:
            held = _report(summary, steps, results, interrupted=False)
            print(
                json.dumps(held) if args.json else f"TD {launched.td_id} held until stdin closes", flush=True
            )
            sys.stdin.read()
    except KeyboardInterrupt:
        interrupted = True
    except GuestError as err:
        print(f"tdxsim guest: {err}", file=sys.stderr)
        return EXIT_STEP_FAILED
    finally:
        td.close()
    report = _report(summary, steps, results, interrupted=interrupted)
    ok = bool(report["ok"])
    if args.json:
        if held is None:
            print(json.dumps(report, indent=2))
    elif interrupted:
        print("interrupted: the TD is destroyed with this guest", file=sys.stderr)
    else:
        print(f"{sum(r.ok for r in results)}/{len(steps or [])} steps passed")
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if ok else EXIT_STEP_FAILED


def _report(
    summary: dict[str, object],
    steps: list[workload.Step] | None,
    results: list[StepResult],
    *,
    interrupted: bool,
) -> dict[str, object]:
    ok = bool(steps is not None and len(results) == len(steps) and all(r.ok for r in results))
    return {**summary, "ok": ok, "interrupted": interrupted, "steps": [r.to_dict() for r in results]}


def _mrtd(td: Td) -> str:
    try:
        return decode_tdreport(td.report()).body.mr_td.hex()
    except AttestError as err:  # the host's bytes: a TDREPORT no TDX module would write
        raise malformed_response(f"TDREPORT: {err}") from None


def _keep_alive(td: Td, summary: dict[str, object], credential: str, as_json: bool) -> int:
    summary["credential"] = credential
    if as_json:
        print(json.dumps(summary), flush=True)
    else:
        print(
            f"TD {summary['td_id']} running (HKID {summary['hkid']}, MRTD {str(summary['mrtd'])[:24]}…); "
            f"credential {credential}\nCtrl-C stops the guest and the host destroys the TD",
            flush=True,
        )
    try:
        td.lifeline_lost.wait()  # set the moment the Attach stream ends: a dead host is noticed at once
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"tdxsim guest: {td.lifeline_gone()}", file=sys.stderr)
    return EXIT_STEP_FAILED


def _serve_tsm(td: Td, summary: dict[str, object], mountpoint: str, as_json: bool) -> int:
    """``--tsm DIR``: the TD's configfs-tsm tree at DIR until Ctrl-C/SIGTERM, then unmounted (guest.tsm)."""
    from guest import tsm  # pyfuse3 loads libfuse 3: only for --tsm

    summary["tsm"] = os.path.abspath(mountpoint)

    def ready() -> None:
        if as_json:
            print(json.dumps(summary), flush=True)
        else:
            print(
                f"TD {summary['td_id']} running (HKID {summary['hkid']}, MRTD {str(summary['mrtd'])[:24]}…); "
                f"configfs-tsm at {summary['tsm']}/report (provider {tsm.PROVIDER})\n"
                "Ctrl-C unmounts it, stops the guest and the host destroys the TD",
                flush=True,
            )

    try:
        stopped = tsm.serve(td.quote, mountpoint, lifeline_lost=td.lifeline_lost, on_ready=ready)
    except tsm.MountError as err:
        return _fail(str(err))
    if stopped is tsm.StopReason.SIGNAL:
        return EXIT_INTERRUPTED
    if stopped is tsm.StopReason.LIFELINE_LOST:
        print(f"tdxsim guest: the host ended the TD's lifeline; {mountpoint} is unmounted", file=sys.stderr)
    else:
        print(f"tdxsim guest: {mountpoint} was unmounted from outside", file=sys.stderr)
    return EXIT_STEP_FAILED
