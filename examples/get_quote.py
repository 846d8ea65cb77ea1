"""Get a DCAP quote for 64 bytes of REPORTDATA with the generated gRPC stubs alone (GHCI GetQuote).

    python examples/get_quote.py --host 127.0.0.1:PORT --admin-credential FILE [--out quote.bin]

TDG.MR.REPORT makes the TDREPORT in private memory; the guest copies it into a shared buffer laid out as the
GHCI says (u64 version = 1, u64 status, u32 in_len, u32 out_len, data), calls TDG.VP.VMCALL<GetQuote> and
reads the buffer back: status 0 and the quote, or an error status. A host started without ``--pki`` has no
quoting service and answers QGS_UNAVAILABLE (exit status 3).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import struct
import sys

import grpc

from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
HEADER = struct.Struct("<QQII")
BUFFER = 64 * 1024
STATUS = {0: "SUCCESS", 0x8000000000000000: "ERROR", 0x8000000000000001: "QGS_UNAVAILABLE"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument(
        "--admin-credential",
        default=os.environ.get("TDXSIM_ADMIN_CREDENTIAL_FILE"),
        required="TDXSIM_ADMIN_CREDENTIAL_FILE" not in os.environ,
        metavar="FILE",
        help="the host's admin credential file (the host prints 'admin credential: PATH'); "
        "default $TDXSIM_ADMIN_CREDENTIAL_FILE",
    )
    parser.add_argument("--out", help="write the quote to this file")
    args = parser.parse_args()
    # Launching is the host operator's act: HostService answers only the admin credential.
    with open(args.admin_credential) as f:
        admin = [("authorization", f"Bearer {f.read().strip()}")]
    channel = grpc.insecure_channel(args.host)
    image = host_pb2.TdImage(memory_bytes=32 * MIB, payload=[host_pb2.Payload(gpa=0, data=b"kernel")])
    td = host_pb2_grpc.HostServiceStub(channel).LaunchTd(
        host_pb2.LaunchTdRequest(image=image), metadata=admin, timeout=30
    )
    auth = [("authorization", f"Bearer {td.credential}")]
    guest = guest_pb2_grpc.TdGuestServiceStub(channel)
    lifeline = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), metadata=auth)
    next(lifeline)
    ins = guest_pb2.Instruction

    def run(*batch: guest_pb2.Instruction) -> list[guest_pb2.InstructionResult]:
        reply = guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=batch), metadata=auth, timeout=30)
        return list(reply.results)

    report_data = hashlib.sha512(b"verifier nonce").digest()
    buf = (16 * MIB) | td.shared_bit
    first = run(
        ins(accept=guest_pb2.AcceptRange(gpa=MIB, length=8192, level=0)),
        ins(write=guest_pb2.GpaData(gpa=MIB + 4096, data=report_data)),
        ins(report=guest_pb2.Report(report_gpa=MIB, reportdata_gpa=MIB + 4096)),
        ins(read=guest_pb2.GpaRange(gpa=MIB, length=1024)),
        ins(map_gpa=guest_pb2.GpaRange(gpa=buf, length=BUFFER)),  # the GHCI buffer must be shared
    )
    report = first[3].data
    if first[4].status != 0:
        print(f"MapGPA of the quote buffer failed: R10 0x{first[4].status:x}", file=sys.stderr)
        return 1
    results = run(
        ins(write=guest_pb2.GpaData(gpa=buf, data=HEADER.pack(1, 0, len(report), 0) + report)),
        ins(get_quote=guest_pb2.GpaRange(gpa=buf, length=BUFFER)),
        ins(read=guest_pb2.GpaRange(gpa=buf, length=BUFFER)),
    )
    _, status, _, out_len = HEADER.unpack_from(results[2].data)
    lifeline.cancel()
    channel.close()
    print(f"GetQuote: TDVMCALL status {results[1].status}, buffer status {STATUS.get(status, hex(status))}")
    if status != 0:
        print("no quote: the host has no quoting service (start it with --pki DIR)", file=sys.stderr)
        return 3 if STATUS.get(status) == "QGS_UNAVAILABLE" else 1
    quote = results[2].data[HEADER.size : HEADER.size + out_len]
    print(f"quote: {len(quote)} bytes, REPORTDATA bound: {report_data in quote}")
    if args.out:
        with open(args.out, "wb") as out:
            out.write(quote)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
