"""The TD quoting enclave's signing logic: TDREPORT in, DCAP quote v4/v5 out (docs/attestation.md §2–§5; §7
steps 7, 8, 10 are what a verifier checks of its work).

The host process owns one ``QuotingEnclave`` per platform; the host's TDX module has already checked the
TDREPORT's MAC (EVERIFYREPORT2) before ``quote`` is called. What the enclave does, in order:

1. at construction: take (or generate) an ECDSA P-256 attestation key; build its QE report — an SGX
   REPORTBODY (384 B) with the platform's QE identity (``attest.intel.identity``: CPUSVN, MISCSELECT,
   ATTRIBUTES,
   MRENCLAVE, MRSIGNER, ISVPRODID 2, ISVSVN) and REPORTDATA = SHA-256(attestation key x‖y ‖ QE auth data) ‖
   32 zero bytes; sign the QE report with the PCK leaf key (certification data type 6 carries the report, its
   signature, the QE auth data and type 5 = the PCK chain PEM leaf, Platform CA, root);
2. per quote: decode the TDREPORT (codec), check that TEE_TCB_INFO_HASH and TEE_INFO_HASH match the
   TEE_TCB_INFO and TDINFO it copies (the MAC covers only the hashes), take the body fields (TD 1.0 for v4
   and v5 type 2, TD 1.5 for v5 type 3), build the header (key type 2, TEE type 0x81, QE/PCE SVN bytes zero
   as real quotes, Intel QE vendor ID, user data = QE ID ‖ 4 zero bytes), sign the signed region with the
   attestation key and encode with the codec (``Quote.encode``), never by hand.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attest.errors import AttestError, QuoteFormatError
from attest.formats import layout as L
from attest.formats.quote import (
    CertificationData,
    EnclaveReport,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    SignatureData,
)
from attest.formats.tdreport import decode_tdreport, tdreport_hashes_match
from attest.intel import identity as P
from attest.intel.ecdsa_keys import raw_public_key, sign_raw

QE_ID_SIZE = 16
MAX_QE_AUTH_DATA = 0xFFFF  # u16 size field


class QuotingEnclaveError(AttestError):
    """The enclave cannot be provisioned (PCK key not the leaf's, chain not PEM) or refuses a TDREPORT whose
    TEE_TCB_INFO / TDINFO do not match the hashes its MAC covers."""


def qe_report_data(attestation_key: bytes, qe_auth_data: bytes) -> bytes:
    """QE REPORTDATA: SHA-256(attestation key x‖y ‖ QE auth data) ‖ 32 zero bytes (docs/attestation.md §5)."""
    return hashlib.sha256(attestation_key + qe_auth_data).digest() + bytes(32)


def build_qe_report(
    attestation_key: bytes, qe_auth_data: bytes, *, isv_svn: int = P.QE_ISVSVN, cpu_svn: bytes = P.CPUSVN
) -> EnclaveReport:
    """The TD QE's SGX REPORTBODY binding ``attestation_key`` (raw 64 bytes)."""
    return EnclaveReport(
        cpu_svn=cpu_svn,
        misc_select=P.QE_MISCSELECT,
        reserved1=bytes(28),
        attributes=P.QE_ATTRIBUTES,
        mr_enclave=P.QE_MRENCLAVE,
        reserved2=bytes(32),
        mr_signer=P.QE_MRSIGNER,
        reserved3=bytes(96),
        isv_prod_id=P.QE_ISVPRODID,
        isv_svn=isv_svn,
        reserved4=bytes(60),
        report_data=qe_report_data(attestation_key, qe_auth_data),
    )


def _check_pck(pck_key: ec.EllipticCurvePrivateKey, pck_chain_pem: bytes) -> None:
    try:
        certs = x509.load_pem_x509_certificates(pck_chain_pem.rstrip(b"\x00"))
    except ValueError as exc:
        raise QuotingEnclaveError(f"pck chain is not pem certificates: {exc}") from None
    if len(certs) < 2:
        raise QuotingEnclaveError("pck chain needs the leaf and its issuers")
    leaf_key = certs[0].public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf_key.public_bytes(*fmt) != pck_key.public_key().public_bytes(*fmt):
        raise QuotingEnclaveError("pck key does not belong to the pck chain's leaf certificate")


class QuotingEnclave:
    """Signs DCAP quotes for TDREPORTs of this platform.

    ``pck_key``/``pck_chain_pem``: this platform's PCK key and chain (``attest.intel.load_pck``); the key must
    be the leaf's. ``attestation_key``: None = a fresh ECDSA P-256 key (what the real QE does at start-up).
    ``qe_svn``: the QE report's ISVSVN. ``qe_auth_data``: 32 bytes ``00…1f`` as real QEs (dcap-qvl requires
    exactly 32). ``qe_id``: 16 bytes of the header's user data; None = derived from the attestation key.
    ``nul_terminated_chain``: append ``\\0`` to the PEM chain as newer QEs do (default True).
    """

    def __init__(
        self,
        pck_key: ec.EllipticCurvePrivateKey,
        pck_chain_pem: bytes,
        *,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
        qe_svn: int = P.QE_ISVSVN,
        qe_auth_data: bytes = P.QE_AUTH_DATA,
        qe_id: bytes | None = None,
        cpu_svn: bytes = P.CPUSVN,
        nul_terminated_chain: bool = True,
    ) -> None:
        _check_pck(pck_key, pck_chain_pem)
        if len(qe_auth_data) > MAX_QE_AUTH_DATA:
            raise QuotingEnclaveError(f"qe auth data longer than {MAX_QE_AUTH_DATA} bytes")
        self._attestation_key = attestation_key or ec.generate_private_key(ec.SECP256R1())
        if self._attestation_key.curve.name != "secp256r1":
            raise QuotingEnclaveError("attestation key must be p-256")
        self.attestation_public_key = raw_public_key(self._attestation_key.public_key())
        if qe_id is None:
            qe_id = hashlib.sha256(b"tdxsim qe id" + self.attestation_public_key).digest()[:QE_ID_SIZE]
        if len(qe_id) != QE_ID_SIZE:
            raise QuotingEnclaveError(f"qe id must be {QE_ID_SIZE} bytes")
        self.qe_id = qe_id
        self.qe_report = build_qe_report(
            self.attestation_public_key, qe_auth_data, isv_svn=qe_svn, cpu_svn=cpu_svn
        )
        chain = pck_chain_pem.rstrip(b"\x00") + (b"\x00" if nul_terminated_chain else b"")
        self.certification_data = QeReportCertificationData(
            qe_report=self.qe_report,
            qe_report_signature=sign_raw(pck_key, self.qe_report.encode()),
            qe_auth_data=qe_auth_data,
            certification_data=CertificationData(L.CERT_TYPE_PCK_CHAIN, chain),
        )

    def header(self, version: int) -> QuoteHeader:
        return QuoteHeader(
            version=version,
            attestation_key_type=L.ATT_KEY_TYPE_ECDSA_P256,
            tee_type=L.TEE_TYPE_TDX,
            qe_svn=0,
            pce_svn=0,
            qe_vendor_id=P.QE_VENDOR_ID,
            user_data=self.qe_id + bytes(L.USER_DATA_SIZE - QE_ID_SIZE),
        )

    def quote(
        self, td_report: bytes, *, version: int = L.QUOTE_VERSION_4, body_type: int | None = None
    ) -> bytes:
        """A signed DCAP quote for ``td_report`` (1024 bytes, MAC already checked by the TDX module).

        ``version`` 4 carries a TD 1.0 body; 5 carries ``body_type`` 3 (TD 1.5, default) or 2 (TD 1.0).
        Raises ``QuoteFormatError`` for a malformed TDREPORT or an unsupported version/body type, and
        ``QuotingEnclaveError`` when the TDREPORT's hashes do not cover its TEE_TCB_INFO / TDINFO.
        """
        if version == L.QUOTE_VERSION_4:
            if body_type not in (None, L.BODY_TYPE_TD10):
                raise QuoteFormatError(f"quote v4 carries body type {L.BODY_TYPE_TD10} only, not {body_type}")
            body_type = L.BODY_TYPE_TD10
        elif version == L.QUOTE_VERSION_5:
            body_type = L.BODY_TYPE_TD15 if body_type is None else body_type
            if body_type not in (L.BODY_TYPE_TD10, L.BODY_TYPE_TD15):
                raise QuoteFormatError(f"unsupported body type {body_type}")
        else:
            raise QuoteFormatError(f"unsupported quote version {version}")
        report = decode_tdreport(td_report)
        if not tdreport_hashes_match(report.raw):
            raise QuotingEnclaveError("tdreport tee_tcb_info/tdinfo do not match their hashes")
        unsigned = Quote(
            header=self.header(version),
            body_type=body_type,
            body=report.to_body(body_type),
            signature_data=SignatureData(bytes(64), self.attestation_public_key, self.certification_data),
        )
        signature = sign_raw(self._attestation_key, unsigned.encode_signed_region())
        signed = Quote(
            header=unsigned.header,
            body_type=body_type,
            body=unsigned.body,
            signature_data=SignatureData(signature, self.attestation_public_key, self.certification_data),
        )
        return signed.encode()
