"""One guest process of a scale benchmark: launches a TD on a host, then does timed work when told to (the
``scale`` and ``attest`` suites, docs/cli.md "``tdxsim bench``").

Run as ``python -m tdxsim.bench.worker --host ADDR --admin-credential FILE --mode write|attest
[--verifier ADDR]``. It prints one JSON line once its TD runs (``{"ready": true, "td_id": N}``), then reads
commands on stdin, one per line, and answers each with one JSON line:

- ``run START END`` (Unix times): from START until END, repeat the mode's operation — ``write``: a 1 MiB
  private write (one ``WriteMemory``); ``attest``: a whole attestation (``GetNonce`` → quote → ``Attest``:
  DCAP verification, appraisal, token) — and answer ``{"ops", "bytes", "errors", "error"}`` counting the
  operations that finished by END. The benchmark gives every worker the same window, so the sum over
  workers is the aggregate throughput.
- ``quote``: one DCAP quote of this TD, hex-encoded (``{"quote": HEX}``).

End of input stops it; its TD goes with its lifeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from guest.attestation import Verifier
from guest.errors import GuestError
from guest.td import Td
from wire.credentials import read_credential_file
from wire.v1 import host_pb2

MIB = 1 << 20


def _launch(host: str, admin_file: str, memory: int) -> Td:
    image = host_pb2.TdImage(
        memory_bytes=memory, payload=[host_pb2.Payload(gpa=0, data=b"bench", measure=True)]
    )
    td, _ = Td.launch(host, image, name="bench-worker", admin_credential=read_credential_file(admin_file))
    return td


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdxsim.bench.worker", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--admin-credential", required=True, metavar="FILE")
    parser.add_argument(
        "--verifier", help="verifier address, or a comma list of replicas to spread calls over (attest mode)"
    )
    parser.add_argument("--mode", choices=["write", "attest"], default="write")
    parser.add_argument("--memory", type=int, default=64 * MIB, help="TD memory in bytes")
    args = parser.parse_args(argv)
    with _launch(args.host, args.admin_credential, args.memory) as td:
        verifier = Verifier(args.verifier) if args.verifier else None
        gpa = td.alloc(2 * MIB)
        payload = bytes(range(256)) * (MIB // 256)
        td.write(gpa, payload)  # accepted, warm

        def operation() -> int:
            if args.mode == "write":
                td.write(gpa, payload)
                return MIB
            assert verifier is not None, "attest mode needs --verifier"
            verifier.attest(td)
            return 0

        print(json.dumps({"ready": True, "td_id": td.td_id}), flush=True)
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["quote"]:
                print(json.dumps({"quote": td.quote(bytes(64)).hex()}), flush=True)
            elif words[:1] == ["run"] and len(words) == 3:
                start, end = float(words[1]), float(words[2])
                time.sleep(max(0.0, start - time.time()))
                ops = size = errors = 0
                first_error = ""
                while time.time() < end:
                    try:
                        n = operation()
                    except GuestError as err:
                        errors += 1
                        first_error = first_error or str(err)
                        continue
                    if time.time() <= end:
                        ops += 1
                        size += n
                print(
                    json.dumps({"ops": ops, "bytes": size, "errors": errors, "error": first_error}),
                    flush=True,
                )
        if verifier is not None:
            verifier.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
