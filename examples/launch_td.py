"""Launch a measured TD with the generated gRPC stubs alone, attach as its guest and read its TDREPORT.

    python examples/launch_td.py --host 127.0.0.1:PORT --admin-credential FILE

HostService.LaunchTd ADDs and EXTENDs the payload into MRTD and returns a credential bound to this one TD;
every TdGuestService call presents it as ``authorization: Bearer``. The Attach stream is the TD's lifeline:
when this script exits, the host destroys the TD.
"""

from __future__ import annotations

import argparse
import hashlib
import os

import grpc

from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
KERNEL = b"example kernel\n" * 300


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
    args = parser.parse_args()
    # Launching is the host operator's act: HostService answers only the admin credential.
    with open(args.admin_credential) as f:
        admin = [("authorization", f"Bearer {f.read().strip()}")]
    channel = grpc.insecure_channel(args.host)
    image = host_pb2.TdImage(
        memory_bytes=32 * MIB, payload=[host_pb2.Payload(gpa=0x100000, data=KERNEL, measure=True)]
    )
    td = host_pb2_grpc.HostServiceStub(channel).LaunchTd(
        host_pb2.LaunchTdRequest(image=image, name="example"), metadata=admin, timeout=30
    )
    print(f"launched TD {td.td_id}: HKID {td.hkid}, {td.pages_added} pages added")
    auth = [("authorization", f"Bearer {td.credential}")]
    guest = guest_pb2_grpc.TdGuestServiceStub(channel)
    lifeline = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), metadata=auth)
    print(next(lifeline).detail)
    ins = guest_pb2.Instruction
    batch = [
        ins(accept=guest_pb2.AcceptRange(gpa=0, length=8192, level=0)),  # two private pages: report + data
        ins(write=guest_pb2.GpaData(gpa=4096, data=hashlib.sha512(b"hello").digest())),
        ins(report=guest_pb2.Report(report_gpa=0, reportdata_gpa=4096)),
        ins(read=guest_pb2.GpaRange(gpa=0, length=1024)),
    ]
    results = guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=batch), metadata=auth, timeout=30)
    report = results.results[-1].data
    print(f"TDREPORT: {len(report)} bytes, MRTD {report[528:576].hex()}")
    lifeline.cancel()
    channel.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
