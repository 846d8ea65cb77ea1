"""The simulated PCS issues what Intel issues: its certificates and CRLs have the structure of the real ones
in the vectors, field by field (docs/attestation.md §6, §15).

Compared from the DER: the TBSCertificate's fields and their ASN.1 types, the signature algorithm, the key's
algorithm and curve, subject and issuer (every RDN: attribute type, string type, value), the extensions in
order with their criticality as encoded, the exact bytes of KeyUsage and BasicConstraints, the shape of AKI,
SKI and the CRL distribution point (and the rule that derives the key identifiers), the distribution point's
scheme, path and query, and the SGX extension's OIDs, ASN.1 types and octet-string sizes. Only these may
differ: keys (so key identifiers and signatures), serial numbers, dates, and the simulation marker: the one
organizationalUnitName RDN ``attest.formats.pck_names.SIMULATION_MARKER`` in every name, and the distribution
points' hosts under ``tdxsim.invalid`` instead of Intel's.

The real chains are those of the quotes issued under Intel's PCS v4 API (the DEBUG vector's leaf is older and
names the v3 PCK CRL); the TCB Signing certificate and the CRLs come from the v5 vector's collateral.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from attest_sim_evidence import NOW
from attest_vectors import read_collateral, read_quote
from cryptography import x509

from attest.formats import decode_quote, pck_names
from attest.formats import der as D
from attest.formats.pck_extension import SGX_EXTENSION_OID
from attest.intel import Pki, PkiOptions, init_pki
from attest.verifier.dcap.roots import INTEL_SGX_ROOT_CA_PEM

REAL_CHAINS = ["tdx_v4_quote.bin", "tdx_v5_quote.bin", "tdx_v5_outdated_quote.bin"]
COLLATERAL_OF = "tdx_v5_quote.bin"
TAG_UTF8_STRING = 0x0C
TAG_BIT_STRING = 0x03
CONSTRUCTED = 0x20
CONTEXT_0 = 0x80  # [0] IMPLICIT, the keyIdentifier of an AKI
OID_OU = x509.NameOID.ORGANIZATIONAL_UNIT_NAME.dotted_string
OID_SKI = x509.ExtensionOID.SUBJECT_KEY_IDENTIFIER.dotted_string
OID_AKI = x509.ExtensionOID.AUTHORITY_KEY_IDENTIFIER.dotted_string
OID_CRL_DP = x509.ExtensionOID.CRL_DISTRIBUTION_POINTS.dotted_string
INTEL_HOSTS = {"certificates.trustedservices.intel.com", "api.trustedservices.intel.com"}
SIMULATED_HOSTS = {"certificates.tdxsim.invalid", "api.tdxsim.invalid"}


# --- DER views ----------------------------------------------------------------------------------------------


def shape(buf: bytes, *, octet_sizes: bool = True) -> list[Any]:
    """The ASN.1 skeleton of ``buf``: each element's tag; constructed elements recursively; OIDs with their
    dotted value; OCTET STRINGs, BIT STRINGs and [0] key identifiers with their size (when ``octet_sizes``).
    Other primitive values (integers, strings, times, URIs) are left out: they are values, not structure."""
    out: list[Any] = []
    for tlv in D.read_tlvs(buf):
        if tlv.tag & CONSTRUCTED:
            out.append((tlv.tag, shape(tlv.value, octet_sizes=octet_sizes)))
        elif tlv.tag == D.TAG_OID:
            out.append((tlv.tag, D.decode_oid(tlv.value)))
        elif tlv.tag in (D.TAG_OCTET_STRING, TAG_BIT_STRING, CONTEXT_0) and octet_sizes:
            out.append((tlv.tag, len(tlv.value)))
        else:
            out.append((tlv.tag,))
    return out


def rdns(name: x509.Name) -> list[tuple[str, int, bytes]]:
    """Every RDN of a name, in encoded order, as (attribute type, ASN.1 string tag, value bytes)."""
    out = []
    for rdn in D.read_tlvs(D.read_one(name.public_bytes(), D.TAG_SEQUENCE)):
        (attribute,) = D.read_tlvs(rdn.value)  # one attribute per RDN, as Intel's
        oid, value = D.read_tlvs(attribute.value)
        out.append((D.decode_oid(oid.value), value.tag, value.value))
    return out


def unmarked(name: x509.Name) -> list[tuple[str, int, bytes]]:
    """The RDNs without the simulation marker, which must be there exactly once, as a UTF8String OU."""
    all_rdns = rdns(name)
    marker = (OID_OU, TAG_UTF8_STRING, pck_names.SIMULATION_MARKER.encode())
    assert all_rdns.count(marker) == 1, f"no simulation marker in {name.rfc4514_string()}"
    return [r for r in all_rdns if r != marker]


def raw_extensions(cert: x509.Certificate) -> list[tuple[str, list[tuple[int, bytes]], bytes]]:
    """The extensions as encoded, in order: (OID, what stands between OID and value, i.e. the critical
    BOOLEAN when it is encoded, the extnValue bytes)."""
    tbs = D.read_tlvs(D.read_one(cert.tbs_certificate_bytes, D.TAG_SEQUENCE))
    assert tbs[-1].tag == 0xA3  # [3] extensions
    out = []
    for ext in D.read_tlvs(D.read_one(tbs[-1].value, D.TAG_SEQUENCE)):
        parts = D.read_tlvs(ext.value)
        assert parts[0].tag == D.TAG_OID and parts[-1].tag == D.TAG_OCTET_STRING
        out.append((D.decode_oid(parts[0].value), [(p.tag, p.value) for p in parts[1:-1]], parts[-1].value))
    return out


def crl_url(cert: x509.Certificate) -> tuple[str, str, str, str]:
    """(scheme, host, path, query) of the certificate's one CRL distribution point."""
    (point,) = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (uri,) = point.full_name or ()
    parts = urlsplit(str(uri.value))
    return parts.scheme, parts.netloc, parts.path, parts.query


def profile(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, Any]:
    """Everything about ``cert`` that must be as Intel's, with the marker, keys, serials and dates left out.
    Also checks the rules that tie key-derived values to the keys (so the values themselves may differ)."""
    tbs = D.read_tlvs(D.read_one(cert.tbs_certificate_bytes, D.TAG_SEQUENCE))
    version, _serial, signature, _issuer, validity, _subject, spki, _extensions = tbs
    marked = pck_names.is_simulated(cert.subject)
    names = unmarked if marked else rdns
    extensions = raw_extensions(cert)
    out: dict[str, Any] = {
        "version": cert.version.name,
        "tbs_fields": [t.tag for t in tbs],
        "version_field": shape(version.value),
        "signature_algorithm": (cert.signature_algorithm_oid.dotted_string, shape(signature.value)),
        "validity_time_types": [t.tag for t in D.read_tlvs(validity.value)],
        "public_key": shape(spki.value),
        "subject": names(cert.subject),
        "issuer": names(cert.issuer),
        "extensions": [(oid, middle) for oid, middle, _ in extensions],
    }
    for oid, _, value in extensions:
        if oid in (
            x509.ExtensionOID.KEY_USAGE.dotted_string,
            x509.ExtensionOID.BASIC_CONSTRAINTS.dotted_string,
        ):
            out[oid] = value  # key-independent: byte for byte
        elif oid == OID_SKI:
            out[oid] = shape(value)
            # Intel's key identifiers are the SHA-1 of the whole DER SubjectPublicKeyInfo.
            spki_der = D.tlv(spki.tag, spki.value)
            assert D.read_one(value, D.TAG_OCTET_STRING) == hashlib.sha1(spki_der).digest()
        elif oid == OID_AKI:
            out[oid] = shape(value)
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            assert D.read_tlvs(D.read_one(value, D.TAG_SEQUENCE))[0].value == issuer_ski
        elif oid == OID_CRL_DP:
            out[oid] = shape(value, octet_sizes=False)
            scheme, host, path, query = crl_url(cert)
            assert host in (SIMULATED_HOSTS if marked else INTEL_HOSTS)
            out["crl_url"] = (scheme, path, query)
        elif oid == SGX_EXTENSION_OID:
            out[oid] = shape(value)
    return out


def chain_profiles(certs: list[x509.Certificate]) -> list[dict[str, Any]]:
    """Profiles of a chain given leaf first, ending at its self-signed root."""
    return [profile(c, p) for c, p in zip(certs, [*certs[1:], certs[-1]], strict=True)]


def crl_profile(crl_der: bytes, marked: bool) -> dict[str, Any]:
    crl = x509.load_der_x509_crl(crl_der)
    tbs = D.read_tlvs(D.read_one(crl.tbs_certlist_bytes, D.TAG_SEQUENCE))
    names = unmarked if marked else rdns
    entry_extensions = sorted(
        {(e.oid.dotted_string, e.critical, repr(e.value)) for r in crl for e in r.extensions}
    )
    return {
        "tbs_fields": [t.tag for t in tbs],
        "update_time_types": [t.tag for t in tbs[3:5]],
        "signature_algorithm": crl.signature_algorithm_oid.dotted_string,
        "issuer": names(crl.issuer),
        "extensions": [(e.oid.dotted_string, e.critical) for e in crl.extensions],
        "aki": shape(
            crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.public_bytes()
        ),
        "entry_extensions": entry_extensions,
    }


# --- the two sides ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return init_pki(tmp_path_factory.mktemp("pki") / "pki", PkiOptions(now=NOW, revoked_platforms=(0,)))


def simulated_chain(pki: Pki) -> list[x509.Certificate]:
    return [pki.platform(0).certificate, pki.pck_ca.certificate, pki.root.certificate]


def real_chain(name: str) -> list[x509.Certificate]:
    return [
        x509.load_pem_x509_certificate(p) for p in decode_quote(read_quote(name)).pck_chain.pem_certificates()
    ]


def real_collateral() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(read_collateral(COLLATERAL_OF))
    return doc


# --- comparisons --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_CHAINS)
def test_pck_chain_has_the_structure_of_the_real_one_field_by_field(simulated: Pki, name: str) -> None:
    ours, theirs = chain_profiles(simulated_chain(simulated)), chain_profiles(real_chain(name))
    for position, (mine, real) in enumerate(zip(ours, theirs, strict=True)):
        for field in sorted(set(mine) | set(real)):
            assert mine.get(field) == real.get(field), f"certificate {position} ({name}): {field} differs"


def test_tcb_signing_certificate_has_the_structure_of_the_real_one(simulated: Pki) -> None:
    chain = x509.load_pem_x509_certificates(real_collateral()["tcb_info_issuer_chain"].encode())
    real = profile(chain[0], chain[1])
    mine = profile(simulated.tcb_signing.certificate, simulated.root.certificate)
    assert {f: mine.get(f) for f in set(mine) | set(real)} == {f: real.get(f) for f in set(mine) | set(real)}
    issuer_chain = x509.load_pem_x509_certificates(simulated.tcb_signing_chain_pem.encode())
    assert [c.subject for c in issuer_chain] == [
        simulated.tcb_signing.certificate.subject,
        simulated.root.certificate.subject,
    ]


@pytest.mark.parametrize(("member", "ours"), [("root_ca_crl", "root_ca_crl"), ("pck_crl", "pck_crl")])
def test_crls_have_the_structure_of_the_real_ones(simulated: Pki, member: str, ours: str) -> None:
    real = crl_profile(bytes.fromhex(real_collateral()[member]), marked=False)
    mine = crl_profile(getattr(simulated, ours), marked=True)
    if member == "root_ca_crl":  # Intel's root CA CRL lists nothing; the simulated PCK CRL lists platform 0
        assert real["entry_extensions"] == mine["entry_extensions"] == []
    assert mine == real


def test_names_are_intels_attributes_and_types_plus_one_marker(simulated: Pki) -> None:
    """Every simulated name is Intel's RDN for RDN (CN, O, L, ST, C; UTF8String, C a PrintableString) with the
    marker OU after O: what go-tdx-guest (CN), QVL (CN, O, L, ST, C) and dcap-qvl (issuer = subject bytes)
    read is Intel's, and the marker is in the one attribute none of them reads."""
    intel = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM)
    expected = rdns(intel.subject)
    ours = rdns(simulated.root.certificate.subject)
    assert ours[:2] + ours[3:] == expected
    assert ours[2] == (OID_OU, TAG_UTF8_STRING, pck_names.SIMULATION_MARKER.encode())
    unmarked_name = pck_names.intel_name(pck_names.ROOT_CA_CN, simulated=False)
    assert unmarked_name.public_bytes() == intel.subject.public_bytes()
    for cert in [*simulated_chain(simulated), simulated.tcb_signing.certificate]:
        # go-tdx-guest's checks: the subject CN is the phrase, the issuer string equals the parent's subject.
        assert pck_names.common_name(cert.subject) in {
            pck_names.ROOT_CA_CN,
            pck_names.PLATFORM_CA_CN,
            pck_names.PCK_CN,
            pck_names.TCB_SIGNING_CN,
        }
    leaf, ca, root = simulated_chain(simulated)
    assert leaf.issuer.rfc4514_string() == ca.subject.rfc4514_string()
    assert ca.issuer.rfc4514_string() == root.subject.rfc4514_string() == root.issuer.rfc4514_string()
    # QVL's DistinguishedName comparison: CN, C, O, L, ST equal to Intel's constants.
    for cert, cn in ((leaf, pck_names.PCK_CN), (ca, pck_names.PLATFORM_CA_CN), (root, pck_names.ROOT_CA_CN)):
        assert _qvl_fields(cert.subject) == _qvl_fields(pck_names.intel_name(cn, simulated=False))


def _qvl_fields(name: x509.Name) -> tuple[str, ...]:
    oids = (
        x509.NameOID.COMMON_NAME,
        x509.NameOID.COUNTRY_NAME,
        x509.NameOID.ORGANIZATION_NAME,
        x509.NameOID.LOCALITY_NAME,
        x509.NameOID.STATE_OR_PROVINCE_NAME,
    )
    return tuple(str(name.get_attributes_for_oid(oid)[0].value) for oid in oids)


def test_a_difference_in_structure_is_caught(simulated: Pki, tmp_path: Path) -> None:
    """The comparison is not vacuous: a Standard platform's leaf (Processor CA, five SGX items) differs."""
    real = chain_profiles(real_chain(REAL_CHAINS[1]))[0]
    standard = init_pki(tmp_path / "standard", PkiOptions(now=NOW, sgx_type=0))
    mine = chain_profiles(simulated_chain(standard))[0]
    assert mine[SGX_EXTENSION_OID] != real[SGX_EXTENSION_OID]  # five items, not seven
    assert mine["issuer"] != real["issuer"]  # Processor CA, not Platform CA
    assert mine["crl_url"] != real["crl_url"]  # ca=processor
