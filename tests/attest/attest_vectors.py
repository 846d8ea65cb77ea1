"""Helpers for the attestation tests: the real TDX vectors (read-only), found by ``tests.conftest``.

Every reader skips the test that calls it when the vectors are absent (``TDXSIM_VECTORS``, else
``../shared/vectors``), so nothing here reads a file at import time. A uniquely named module (not conftest.py)
so `from attest_vectors import …` cannot collide with other packages' conftest modules.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VECTORS, VECTORS_MISSING, real_vectors

#: Whether the real vectors are there (for fixtures that add real data to simulated data when they can).
AVAILABLE = VECTORS is not None
V4 = "tdx_v4_quote.bin"


@functools.cache
def _expected() -> dict[str, dict[str, Any]]:
    parsed: dict[str, dict[str, Any]] = json.loads((real_vectors() / "expected.json").read_text())
    return parsed


def _names(verifiable_only: bool) -> list[Any]:
    """Quote names to parametrize over; without the vectors one skipped placeholder, so collection holds."""
    if not AVAILABLE:
        return [pytest.param("", id="no-real-vectors", marks=pytest.mark.skip(reason=VECTORS_MISSING))]
    return sorted(name for name, e in _expected().items() if "collateral" in e or not verifiable_only)


QUOTE_NAMES = _names(verifiable_only=False)
VERIFIABLE = _names(verifiable_only=True)


def vectors_dir() -> Path:
    return real_vectors()


def expected_for(name: str) -> dict[str, Any]:
    return _expected()[name]


def read_quote(name: str) -> bytes:
    return (real_vectors() / name).read_bytes()


def collateral_path(name: str) -> Path:
    return real_vectors() / expected_for(name)["collateral"]


def read_collateral(name: str) -> str:
    return collateral_path(name).read_text()


def intel_root_pem() -> bytes:
    return (real_vectors() / "intel_sgx_root_ca.pem").read_bytes()


def mixed_time() -> int:
    """When a verifier that holds both real and simulated collateral evaluates it (the simulated PCS issues at
    the same time): the v4 vector's ``verify_at_unix``, inside its collateral window. Without the vectors only
    simulated collateral is loaded and the same fixed time serves."""
    return int(expected_for(V4)["verify_at_unix"]) if AVAILABLE else 1_750_332_747
