"""The simulated Intel PCS (attest.intel): certificates, SGX extension DER, CRLs, signed collateral, files."""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path

import dcap_qvl
import pytest
from attest_sim_evidence import NOW
from attest_vectors import read_quote
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

import attest
from attest.formats import decode_quote, pck_names
from attest.formats import der as reader
from attest.formats import der as writer
from attest.formats.collateral import parse_qe_identity, parse_tcb_info
from attest.formats.der import integer
from attest.formats.pck_extension import (
    SCALABLE_CONFIGURATION,
    SGX_EXTENSION_OID,
    PckConfiguration,
    PckExtension,
    encode_sgx_extension,
    parse_sgx_extension,
    pck_extension_of,
)
from attest.intel import PkiError, PkiOptions, init_pki, load_pck, load_pki
from attest.intel import cli as pki_cli
from attest.intel import identity as P
from attest.verifier.dcap import parse_collateral
from attest.verifier.dcap.chains import load_crl, verify_raw_signature
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

REAL_QUOTES = [
    "tdx_v4_quote.bin",
    "tdx_v5_quote.bin",
    "tdx_v5_outdated_quote.bin",
    "tdx_v4_debug_td_quote.bin",
]


def _cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


@pytest.mark.parametrize("name", REAL_QUOTES)
def test_sgx_extension_encoder_reproduces_real_pck_leaf_der(name: str) -> None:
    leaf_pem = decode_quote(read_quote(name)).pck_chain.pem_certificates()[0]
    leaf = x509.load_pem_x509_certificate(leaf_pem)
    real = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(real, x509.UnrecognizedExtension)
    # One model: the decoder's value is the encoder's input, and re-encoding gives Intel's bytes.
    assert encode_sgx_extension(pck_extension_of(leaf)) == real.value


_EXTENSION = PckExtension(
    ppid=bytes(range(16)),
    tcb_components=tuple(range(16)),
    pce_svn=0x1234,
    cpu_svn=bytes(range(16, 32)),
    pce_id=P.PCEID,
    fmspc=P.FMSPC,
    sgx_type=0,
)


@pytest.mark.parametrize(
    "ext",
    [
        _EXTENSION,
        replace(
            _EXTENSION, sgx_type=1, platform_instance_id=b"\x07" * 16, configuration=SCALABLE_CONFIGURATION
        ),
        replace(
            _EXTENSION,
            sgx_type=2,
            platform_instance_id=b"\x07" * 16,
            configuration=PckConfiguration(dynamic_platform=False, smt_enabled=True),
        ),
    ],
    ids=["standard", "scalable", "partial-configuration"],
)
def test_sgx_extension_encode_then_decode_is_identity(ext: PckExtension) -> None:
    assert parse_sgx_extension(encode_sgx_extension(ext)) == ext


def test_partial_configuration_encodes_only_the_flags_present() -> None:
    ext = replace(_EXTENSION, sgx_type=1, configuration=PckConfiguration(cached_keys=False))
    assert ext.configuration is not None and ext.configuration.items() == (("cached_keys", False),)
    oid7 = "060a2a864886f84d010d0107"  # 1.2.840.113741.1.13.1.7
    oid72 = "060b2a864886f84d010d010702"  # .7.2 cachedKeys
    configuration = "3020" + oid7 + "3012" + "3010" + oid72 + "010100"
    encoded = encode_sgx_extension(ext).hex()
    assert encoded.endswith("0a0101" + configuration)  # right after SGX type 1, no PlatformInstanceID


@pytest.mark.parametrize(
    ("field", "value"),
    [("ppid", b"\x00" * 15), ("tcb_components", (256,) * 16), ("pce_svn", 0x10000), ("sgx_type", 3)],
)
def test_pck_extension_rejects_out_of_range_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        replace(_EXTENSION, **{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "der"), [(0, "020100"), (127, "02017f"), (128, "02020080"), (256, "02020100")]
)
def test_der_integer_is_minimal_twos_complement(value: int, der: str) -> None:
    assert integer(value).hex() == der


def test_der_tag_numbers_are_defined_once_and_shared_by_encoder_and_reader() -> None:
    definitions: dict[str, list[str]] = {}
    for path in sorted(Path(attest.__file__).parent.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id.startswith("TAG_"):
                    definitions.setdefault(target.id, []).append(path.name)
    assert {name: where for name, where in definitions.items() if len(where) > 1} == {}
    # The encoder's bytes carry the reader's tags.
    encoded = [
        writer.boolean(True),
        writer.integer(5),
        writer.octets(b"x"),
        writer.oid("1.2.3"),
        writer.enumerated(1),
    ]
    assert [t.tag for t in reader.read_tlvs(b"".join(encoded))] == [
        reader.TAG_BOOLEAN,
        reader.TAG_INTEGER,
        reader.TAG_OCTET_STRING,
        reader.TAG_OID,
        reader.TAG_ENUMERATED,
    ]
    assert reader.read_tlvs(writer.sequence())[0].tag == reader.TAG_SEQUENCE == 0x30


def test_hierarchy_has_intels_names_marked_simulated_and_chains_like_intels(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW))
    root, ca, signer = pki.root.certificate, pki.pck_ca.certificate, pki.tcb_signing.certificate
    leaf = pki.platform(0).certificate
    assert [_cn(c.subject) for c in (root, ca, signer, leaf)] == [
        "Intel SGX Root CA",
        "Intel SGX PCK Platform CA",
        "Intel SGX TCB Signing",
        "Intel SGX PCK Certificate",
    ]
    assert root.issuer == root.subject
    assert (ca.issuer, signer.issuer, leaf.issuer) == (root.subject, root.subject, ca.subject)
    for cert in (root, ca, signer, leaf):
        units = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
        assert (
            [u.value for u in units]
            == [pck_names.SIMULATION_MARKER]
            == ["tdxsim SIMULATED - not issued by Intel"]
        )
        assert pck_names.is_simulated(cert.subject) and pck_names.is_simulated(cert.issuer)
        assert "SIMULATED" in cert.subject.rfc4514_string()
    # The root's key is tdxsim's own: Intel's root is a different certificate with a different key.
    intel = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    assert root.public_key() != intel.public_key()
    assert not pck_names.is_simulated(intel.subject)
    leaf.verify_directly_issued_by(ca)
    ca.verify_directly_issued_by(root)
    signer.verify_directly_issued_by(root)
    for cert in (root, ca, signer, leaf):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert cert.not_valid_before_utc.timestamp() <= NOW <= cert.not_valid_after_utc.timestamp()
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
        assert bc.critical and ku.critical
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_pck_leaf_extension_carries_the_platform_identity(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, platforms=2))
    exts = [pck_extension_of(p.certificate) for p in pki.platforms]
    for ext, pck in zip(exts, pki.platforms, strict=True):
        assert ext.fmspc == P.FMSPC
        assert ext.pce_id == P.PCEID
        assert ext.tcb_components == P.SGX_TCB_COMPONENTS
        assert ext.pce_svn == P.PCESVN
        assert ext.cpu_svn == P.CPUSVN
        assert ext.sgx_type == P.SGX_TYPE == 1  # Scalable, as every real TDX platform
        assert ext.platform_instance_id is not None
        assert ext.ppid == pck.ppid
    assert exts[0].ppid != exts[1].ppid
    theirs = dcap_qvl.parse_pck_extension_from_pem(pki.platform(1).certificate.public_bytes(Encoding.PEM))
    assert (theirs.fmspc, theirs.pce_id, theirs.pce_svn, theirs.cpu_svn, theirs.ppid, theirs.sgx_type) == (
        P.FMSPC,
        P.PCEID,
        P.PCESVN,
        P.CPUSVN,
        pki.platform(1).ppid,
        1,
    )
    assert theirs.platform_instance_id == exts[1].platform_instance_id


@pytest.mark.parametrize("sgx_type", [1, 2])
def test_scalable_sgx_types_are_issued_by_the_platform_ca_with_instance_and_configuration(
    tmp_path: Path, sgx_type: int
) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, sgx_type=sgx_type))
    leaf = pki.platform(0).certificate
    ext = pck_extension_of(leaf)
    assert ext.sgx_type == sgx_type
    assert ext.platform_instance_id is not None and len(ext.platform_instance_id) == 16
    assert ext.configuration == PckConfiguration(dynamic_platform=True, cached_keys=True, smt_enabled=True)
    assert pki.pck_ca_kind == "platform"
    assert _cn(leaf.issuer) == "Intel SGX PCK Platform CA"
    assert _crl_urls(leaf) == [
        "https://api.tdxsim.invalid/sgx/certification/v4/pckcrl?ca=platform&encoding=der"
    ]


def test_standard_sgx_type_is_issued_by_the_processor_ca_without_platform_items(tmp_path: Path) -> None:
    """Intel issues Standard (type 0) platforms' PCK leaves from the PCK Processor CA, whose leaves carry the
    five items PPID, TCB, PCE-ID, FMSPC and SGX type only (QVL's ProcessorPckCertificate wants exactly
    five)."""
    pki = init_pki(tmp_path / "pki", PkiOptions(now=NOW, sgx_type=0))
    leaf = pki.platform(0).certificate
    ext = pck_extension_of(leaf)
    assert (ext.sgx_type, ext.platform_instance_id, ext.configuration) == (0, None, None)
    value = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(value, x509.UnrecognizedExtension)
    assert len(reader.oid_value_pairs(reader.read_one(value.value, reader.TAG_SEQUENCE))) == 5
    assert pki.pck_ca_kind == "processor"
    assert _cn(pki.pck_ca.certificate.subject) == _cn(leaf.issuer) == "Intel SGX PCK Processor CA"
    assert _crl_urls(leaf) == [
        "https://api.tdxsim.invalid/sgx/certification/v4/pckcrl?ca=processor&encoding=der"
    ]
    assert load_crl(pki.pck_crl, "pck").issuer == pki.pck_ca.certificate.subject
    chain = x509.load_pem_x509_certificates(json.loads(pki.collateral_json)["pck_crl_issuer_chain"].encode())
    assert [_cn(c.subject) for c in chain] == ["Intel SGX PCK Processor CA", "Intel SGX Root CA"]
    loaded = load_pki(tmp_path / "pki")
    assert loaded.pck_ca.certificate == pki.pck_ca.certificate and loaded.pck_crl == pki.pck_crl
    assert (tmp_path / "pki" / "pck_processor_ca.pem").is_file()
    assert dcap_qvl.parse_pck_extension_from_pem(pki.platform(0).chain_pem).sgx_type == 0


def _crl_urls(cert: x509.Certificate) -> list[str]:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return [str(name.value) for point in points for name in point.full_name or ()]


def test_tcb_info_and_qe_identity_are_intel_format_and_signed_over_exact_text(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW))
    key = pki.tcb_signing.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    verify_raw_signature(key, pki.tcb_info.signature, pki.tcb_info.text.encode(), "tcbinfo")
    verify_raw_signature(key, pki.qe_identity.signature, pki.qe_identity.text.encode(), "qe identity")
    assert pki.tcb_info.text.startswith('{"id":"TDX","version":3,"issueDate":"')
    info = parse_tcb_info(pki.tcb_info.text)
    assert (info.fmspc, info.pce_id, info.tcb_type) == (P.FMSPC, P.PCEID, 0)
    assert info.issue_date <= NOW <= info.next_update
    assert info.next_update - info.issue_date == 30 * 86_400
    assert info.tdx_module is not None and info.tdx_module.mrsigner == P.MRSIGNERSEAM
    assert [m.id for m in info.tdx_module_identities] == ["TDX_01"]
    assert [lv.status for lv in info.tcb_levels] == ["UpToDate", "OutOfDate", "OutOfDate"]
    top = info.tcb_levels[0]
    assert (top.sgx_components, top.pce_svn) == (P.SGX_TCB_COMPONENTS, P.PCESVN)
    assert all(need <= have for need, have in zip(top.tdx_components, P.TEE_TCB_SVN, strict=True))
    assert all(lv.advisory_ids for lv in info.tcb_levels[1:])
    qe = parse_qe_identity(pki.qe_identity.text)
    assert (qe.id, qe.version, qe.isv_prod_id, qe.mrsigner) == ("TD_QE", 2, 2, P.QE_MRSIGNER)
    assert [(lv.isv_svn, lv.status) for lv in qe.tcb_levels] == [(P.QE_ISVSVN, "UpToDate"), (2, "OutOfDate")]


def test_collateral_json_has_dcap_qvl_fields_and_round_trips(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW))
    doc = json.loads(pki.collateral_json)
    assert list(doc) == [
        "pck_crl_issuer_chain",
        "root_ca_crl",
        "pck_crl",
        "tcb_info_issuer_chain",
        "tcb_info",
        "tcb_info_signature",
        "qe_identity_issuer_chain",
        "qe_identity",
        "qe_identity_signature",
    ]
    assert doc["tcb_info"] == pki.tcb_info.text
    theirs = dcap_qvl.QuoteCollateralV3.from_json(pki.collateral_json)
    assert theirs.tcb_info == pki.tcb_info.text
    assert theirs.tcb_info_signature == pki.tcb_info.signature
    assert theirs.root_ca_crl == pki.root_ca_crl
    ours = parse_collateral(pki.collateral_json)
    assert ours.qe_identity_text == pki.qe_identity.text
    assert ours.pck_crl == pki.pck_crl
    chain = x509.load_pem_x509_certificates(doc["pck_crl_issuer_chain"].encode())
    assert [c.subject for c in chain] == [pki.pck_ca.certificate.subject, pki.root.certificate.subject]


def test_crls_are_signed_by_their_issuers_and_list_revoked_pcks(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, platforms=3, revoked_platforms=(1,)))
    root_crl, pck_crl = load_crl(pki.root_ca_crl, "root"), load_crl(pki.pck_crl, "pck")
    assert root_crl.issuer == pki.root.certificate.subject
    assert pck_crl.issuer == pki.pck_ca.certificate.subject
    root_key, ca_key = pki.root.certificate.public_key(), pki.pck_ca.certificate.public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey) and isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert root_crl.is_signature_valid(root_key) and pck_crl.is_signature_valid(ca_key)
    assert len(root_crl) == 0
    assert [r.serial_number for r in pck_crl] == [pki.platform(1).serial_number]


def test_expired_collateral_ends_before_now(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, collateral_expired=True))
    assert parse_tcb_info(pki.tcb_info.text).next_update < NOW
    assert parse_qe_identity(pki.qe_identity.text).next_update < NOW
    for crl in (pki.root_ca_crl, pki.pck_crl):
        next_update = load_crl(crl, "crl").next_update_utc
        assert next_update is not None and next_update.timestamp() < NOW


def test_wrong_issuer_signer_chains_to_a_rogue_root_with_the_same_name(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW, wrong_issuer=True))
    chain = x509.load_pem_x509_certificates(pki.tcb_signing_chain_pem.encode())
    rogue_root = chain[-1]
    assert rogue_root.subject == pki.root.certificate.subject
    assert rogue_root.public_bytes(Encoding.DER) != pki.root_der
    with pytest.raises(InvalidSignature):
        chain[0].verify_directly_issued_by(pki.root.certificate)


def test_files_are_written_with_private_keys_0600_and_load_back_identically(tmp_path: Path) -> None:
    made = init_pki(tmp_path / "pki", PkiOptions(now=NOW, platforms=2, tcb_status="SWHardeningNeeded"))
    keys = sorted(p.relative_to(tmp_path / "pki").as_posix() for p in (tmp_path / "pki").rglob("*.key"))
    assert keys == [
        "pck_platform_ca.key",
        "platforms/0/pck.key",
        "platforms/1/pck.key",
        "root_ca.key",
        "tcb_signing.key",
    ]
    for key_file in keys:
        assert stat.S_IMODE((tmp_path / "pki" / key_file).stat().st_mode) == 0o600
    loaded = load_pki(tmp_path / "pki")
    assert loaded.options == made.options
    assert loaded.now == NOW
    assert loaded.root_der == made.root_der
    assert loaded.collateral_json == made.collateral_json
    assert loaded.tcb_info == made.tcb_info and loaded.qe_identity == made.qe_identity
    assert [p.certificate for p in loaded.platforms] == [p.certificate for p in made.platforms]
    assert [p.chain_pem for p in loaded.platforms] == [p.chain_pem for p in made.platforms]
    key, chain = load_pck(tmp_path / "pki", 1)
    assert key.private_numbers() == made.platform(1).key.private_numbers()
    assert chain == made.platform(1).chain_pem
    tcb_response = json.loads((tmp_path / "pki" / "tcb_info.json").read_text())
    assert bytes.fromhex(tcb_response["signature"]) == made.tcb_info.signature


def test_init_refuses_a_directory_that_holds_a_pki(tmp_path: Path) -> None:
    init_pki(tmp_path, PkiOptions(now=NOW))
    with pytest.raises(PkiError, match="already holds a pki"):
        init_pki(tmp_path, PkiOptions(now=NOW))


def test_load_of_an_empty_directory_is_a_pki_error(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="cannot load pki"):
        load_pki(tmp_path)


def test_same_seed_gives_same_keys_serials_and_ppids(tmp_path: Path) -> None:
    a = init_pki(tmp_path / "a", PkiOptions(now=NOW, seed=b"tdxsim"))
    b = init_pki(tmp_path / "b", PkiOptions(now=NOW, seed=b"tdxsim"))
    c = init_pki(tmp_path / "c", PkiOptions(now=NOW, seed=b"other"))
    assert a.root.key.private_numbers() == b.root.key.private_numbers()
    assert a.platform(0).serial_number == b.platform(0).serial_number
    assert a.platform(0).ppid == b.platform(0).ppid
    assert a.tcb_info.text == b.tcb_info.text
    assert a.root.key.private_numbers() != c.root.key.private_numbers()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"platforms": 0}, "platforms must be >= 1"),
        ({"tcb_status": "Fine"}, "unknown tcb status"),
        ({"qe_tcb_status": "SWHardeningNeeded"}, "unknown qe tcb status"),
        ({"revoked_platforms": (1,)}, "out of range"),
        ({"sgx_type": 3}, "sgx_type"),
        ({"collateral_validity": 60}, "collateral_validity"),
    ],
)
def test_invalid_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(PkiError, match=message):
        PkiOptions(**options)  # type: ignore[arg-type]


def test_platform_index_out_of_range_is_refused(tmp_path: Path) -> None:
    pki = init_pki(tmp_path, PkiOptions(now=NOW))
    with pytest.raises(PkiError, match="no platform 1"):
        pki.platform(1)


def test_pki_init_cli_creates_and_summarises_then_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    pki_cli.add_arguments(parser)
    argv = ["init", str(tmp_path / "pki"), "--now", str(NOW), "--platforms", "2", "--revoke", "1", "--json"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    loaded = load_pki(tmp_path / "pki")
    assert out["simulated"] is True
    assert out["root_ca"]["sha256"] == hashlib.sha256(loaded.root_der).hexdigest()
    assert out["collateral_window"] == [NOW - 3_600, NOW - 3_600 + 30 * 86_400]
    assert [p["revoked"] for p in out["platforms"]] == [False, True]
    assert loaded.options.revoked_platforms == (1,)
    args = parser.parse_args(argv)
    assert args.func(args) == 2
    assert "already holds a pki" in capsys.readouterr().err
