"""The KBS protocol's TDX payloads (docs/kbs.md §3): RFC 8785 canonical JSON, the runtime-data binding, the
TDX evidence document; and the verifier's refusals of ``--kbs-listen`` addresses."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest.formats import kbs_evidence as K

ROOT = Path(__file__).resolve().parents[2]


def test_canonical_json_follows_rfc8785() -> None:
    # Members sorted by UTF-16 code units (RFC 8785 §3.2.3: U+10000 sorts before U+E000), no whitespace,
    # only the mandatory escapes, control characters as lowercase \u00xx.
    doc = {"\ue000": 1, "\U00010000": 2, "b": [True, None, -5, 'é\n\x1f"\\/'], "a": {}}
    assert (
        K.canonical_json(doc) == '{"a":{},"b":[true,null,-5,"é\\n\\u001f\\"\\\\/"],"𐀀":2,"\ue000":1}'.encode()
    )
    for bad in (1.5, {"x": float("nan")}, 2**53, "\ud800", {1: "a"}, [[[[]]]] * 1 + [object()]):
        with pytest.raises(K.KbsEvidenceError):
            K.canonical_json(bad)
    with pytest.raises(K.KbsEvidenceError):
        K.canonical_json(json.loads("[" * 40 + "]" * 40))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(alphabet=st.characters(max_codepoint=127)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5, alphabet="abcXYZ-_"), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(doc=JSON)
def test_canonical_json_of_ascii_documents_is_sorted_compact_json(doc: Any) -> None:
    assert (
        K.canonical_json(doc)
        == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


def test_report_data_is_sha384_of_the_runtime_data_zero_padded() -> None:
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "eA", "y": "eQ"}
    value = K.report_data("bm9uY2U=", jwk)
    text = (
        '{"additional-evidence":"","nonce":"bm9uY2U=",'
        '"tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}'
    )
    assert value == hashlib.sha384(text.encode()).digest() + bytes(16)
    assert K.report_data("bm9uY2U=", {**jwk, "x": "eB"}) != value


def test_tdx_evidence_round_trip_and_refusals() -> None:
    doc = K.tdx_evidence(b"quote", b"log")
    assert doc == {
        "cc_eventlog": base64.b64encode(b"log").decode(),
        "quote": base64.b64encode(b"quote").decode(),
    }
    assert K.parse_tdx_evidence(doc, 100, 100) == (b"quote", b"log")
    assert K.parse_tdx_evidence(K.tdx_evidence(b"q", None), 100, 100) == (b"q", b"")
    assert K.parse_tdx_evidence({"quote": "cQ==", "cc_eventlog": ""}, 100, 100) == (b"q", b"")
    for bad in (
        [],
        {"quote": 5},
        {"quote": "not base64!"},
        {"quote": "cQ==", "cc_eventlog": 7},
        {"cc_eventlog": None},
    ):
        with pytest.raises(K.KbsEvidenceError):
            K.parse_tdx_evidence(bad, 100, 100)
    with pytest.raises(K.KbsEvidenceError, match="larger"):
        K.parse_tdx_evidence({"quote": base64.b64encode(bytes(200)).decode()}, 100, 100)


def _verifier(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    root = tmp_path / "root.pem"
    from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

    root.write_bytes(INTEL_SGX_ROOT_CA_PEM)
    cmd = [sys.executable, "-m", "attest.verifier.service.main", "--listen", "127.0.0.1:0"]
    cmd += ["--db", str(tmp_path / "v.db"), "--root", str(root), *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_unusable_kbs_listen_addresses_are_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for address, says in (
            ("unix:/tmp/kbs.sock", "not on a unix socket"),
            ("127.0.0.1:99999", "not 0..65535"),
            ("nonsense", "not HOST:PORT"),
            (f"127.0.0.1:{port}", "already in use"),
        ):
            done = _verifier(tmp_path, "--kbs-listen", address)
            assert done.returncode == 2 and done.stdout == ""
            assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
