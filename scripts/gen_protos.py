"""Regenerate wire/v1/*_pb2*.py from protos/ with the pinned grpcio-tools.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: the repository root)

The protos keep the package ``tdxsim.v1`` (the names on the wire: ``/tdxsim.v1.HostService/Echo``), and
protoc names the Python modules after the proto path (``tdxsim.v1.host_pb2``). tdxsim's stubs live in the
shared wire package instead, so the generated files are written to ``OUT_DIR/wire/v1/`` with their
``from tdxsim.v1 import`` lines pointed at ``wire.v1``: nothing else in the output is touched.
tests/test_protos_drift.py regenerates into a temporary folder and compares byte for byte.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_PACKAGE = "tdxsim.v1"
PYTHON_PACKAGE = "wire.v1"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("tdxsim/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    target = out_root / Path(*PYTHON_PACKAGE.split("."))
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *[str(p.relative_to(PROTO_ROOT)) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for source in sorted((Path(scratch) / Path(*PROTO_PACKAGE.split("."))).glob("*_pb2*.py*")):
            text = source.read_text()
            text = text.replace(f"from {PROTO_PACKAGE} import ", f"from {PYTHON_PACKAGE} import ")
            (target / source.name).write_text(text)
    return sorted(target.glob("*_pb2*.py*"))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
