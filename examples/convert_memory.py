"""Private ↔ shared conversion with the generated gRPC stubs alone (docs/memory-model.md §2).

    python examples/convert_memory.py --host 127.0.0.1:PORT --admin-credential FILE

The guest accepts 2 MiB, writes a secret, converts the range to shared with TDG.VP.VMCALL<MapGPA> (the VMM
handles it in ≤ 2 MiB chunks and punches the private pages out), writes through the shared alias, converts
back with MapGPA + TDG.MEM.PAGE.ACCEPT and finds zeros: conversions destroy contents.
"""

from __future__ import annotations

import argparse
import os

import grpc

from wire.v1 import guest_pb2, guest_pb2_grpc, host_pb2, host_pb2_grpc

MIB = 1 << 20
GPA = 4 * MIB
SIZE = 2 * MIB


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
    image = host_pb2.TdImage(memory_bytes=32 * MIB, payload=[host_pb2.Payload(gpa=0, data=b"kernel")])
    td = host_pb2_grpc.HostServiceStub(channel).LaunchTd(
        host_pb2.LaunchTdRequest(image=image), metadata=admin, timeout=30
    )
    auth = [("authorization", f"Bearer {td.credential}")]
    guest = guest_pb2_grpc.TdGuestServiceStub(channel)
    lifeline = guest.Attach(guest_pb2.AttachRequest(td_id=td.td_id), metadata=auth)
    next(lifeline)
    shared = GPA | td.shared_bit
    ins = guest_pb2.Instruction

    def run(*batch: guest_pb2.Instruction) -> list[guest_pb2.InstructionResult]:
        reply = guest.Run(guest_pb2.RunRequest(td_id=td.td_id, instructions=batch), metadata=auth, timeout=30)
        return list(reply.results)

    accepted = run(ins(accept=guest_pb2.AcceptRange(gpa=GPA, length=SIZE, level=0)))[0].pages_accepted
    run(ins(write=guest_pb2.GpaData(gpa=GPA, data=b"private secret")))
    print(f"accepted {accepted} pages, wrote a secret at private 0x{GPA:x}")
    to_shared = run(ins(map_gpa=guest_pb2.GpaRange(gpa=shared, length=SIZE)))[0]
    print(f"MapGPA to shared: status {to_shared.status}, {to_shared.chunks} chunk(s)")
    run(ins(write=guest_pb2.GpaData(gpa=shared, data=b"for the host")))
    print("through the shared alias:", run(ins(read=guest_pb2.GpaRange(gpa=shared, length=12)))[0].data)
    to_private = run(ins(map_gpa=guest_pb2.GpaRange(gpa=GPA, length=SIZE)))[0]
    again = run(
        ins(accept=guest_pb2.AcceptRange(gpa=GPA, length=SIZE, level=0)),
        ins(read=guest_pb2.GpaRange(gpa=GPA, length=14)),
    )
    print(f"MapGPA to private: status {to_private.status}; accepted {again[0].pages_accepted} pages")
    print("private again:", again[1].data, "(the secret is gone)" if again[1].data == bytes(14) else "")
    lifeline.cancel()
    channel.close()
    return 0 if again[1].data == bytes(14) else 1


if __name__ == "__main__":
    raise SystemExit(main())
