"""Shared fixtures for the attestation tests: the real vectors of ../shared/vectors/real (read-only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture(scope="session")
def v4_quote() -> bytes:
    return read_quote("tdx_v4_quote.bin")
