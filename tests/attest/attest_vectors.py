"""Helpers for the attestation tests: the real vectors of ../shared/vectors/real (read-only).

A uniquely named module (not conftest.py) so `from attest_vectors import …` cannot collide with other
packages' conftest modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "real"
EXPECTED: dict[str, dict[str, Any]] = json.loads((VECTORS / "expected.json").read_text())
QUOTE_NAMES = sorted(EXPECTED)
VERIFIABLE = sorted(name for name, e in EXPECTED.items() if "collateral" in e)


def read_quote(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def read_collateral(name: str) -> str:
    return (VECTORS / EXPECTED[name]["collateral"]).read_text()


def intel_root_pem() -> bytes:
    return (VECTORS / "intel_sgx_root_ca.pem").read_bytes()
