"""Several platform models from one simulated Intel: PKIs made with one seed and anchor but other FMSPCs and
TCB statuses share their root's key and name (each signs its own copy), and each one's leaves, TCB Info and
PCS answers carry its FMSPC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from attest.formats.collateral import parse_tcb_info
from attest.formats.pck_extension import pck_extension_of
from attest.intel.pcs_directory import PkiError, PkiOptions, init_pki
from attest.intel.pcs_responses import PcsApi
from attest.verifier.dcap import parse_collateral

NOW = 1_800_000_000


def test_platform_models_share_the_root_and_carry_their_fmspc(tmp_path: Path) -> None:
    a = init_pki(tmp_path / "a", PkiOptions(now=NOW, seed=b"s", platforms=2, fmspc="90C06F000001"))
    b = init_pki(
        tmp_path / "b",
        PkiOptions(now=NOW, seed=b"s", platforms=2, fmspc="90c06f000002", tcb_status="OutOfDate"),
    )
    roots = [x509.load_pem_x509_certificate(p.root_pem) for p in (a, b)]
    assert roots[0].subject == roots[1].subject and roots[0].public_key() == roots[1].public_key()
    assert a.platform(0).serial_number == b.platform(0).serial_number  # one seed: same leaf per index
    assert a.platform(1).serial_number != b.platform(0).serial_number
    assert pck_extension_of(a.platform(1).certificate).fmspc == bytes.fromhex("90C06F000001")
    assert pck_extension_of(b.platform(0).certificate).fmspc == bytes.fromhex("90C06F000002")
    for pki, fmspc, status in ((a, "90C06F000001", "UpToDate"), (b, "90C06F000002", "OutOfDate")):
        info = parse_tcb_info(parse_collateral(pki.collateral_json).tcb_info_text)
        assert info.fmspc.hex().upper() == fmspc
        assert (
            json.loads(parse_collateral(pki.collateral_json).tcb_info_text)["tcbLevels"][0]["tcbStatus"]
            == status
        )
        api = PcsApi(pki)
        assert api.fmspc == fmspc


def test_an_fmspc_that_is_not_12_hex_digits_is_refused() -> None:
    with pytest.raises(PkiError, match="fmspc must be 12 hex digits"):
        PkiOptions(fmspc="90C06F")
