"""Regenerate tdxsim/v1/*_pb2*.py from protos/ with the pinned grpcio-tools.

Usage: python scripts/gen_protos.py [OUT_DIR]   (default: the repository root)
The generated modules import each other as `tdxsim.v1.x_pb2`, so the output root must be
importable; tests/test_protos_drift.py regenerates into a temporary folder and compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("tdxsim/v1/*.proto"))
    out_root.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "tdxsim" / "v1").glob("*_pb2*.py*"))


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(out):
        print(path.relative_to(out))
