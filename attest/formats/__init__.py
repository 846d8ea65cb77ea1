"""Quote codec: layouts, decode/encode and shape checks of TDX DCAP quotes v4/v5 and the TDREPORT.

docs/attestation.md §2–§5, docs/memory-model.md §8. No signatures, no policy (go-tdx-guest ``abi`` split).
"""

from attest.formats.quote import (
    CertificationData,
    EnclaveReport,
    QeReportCertificationData,
    Quote,
    QuoteHeader,
    SignatureData,
    TdReport,
    TdReport10,
    TdReport15,
    decode_enclave_report,
    decode_header,
    decode_quote,
    decode_td_report,
    encode_quote,
    quote_bytes,
)
from attest.formats.tdreport import TdReportStruct, decode_tdreport

__all__ = [
    "CertificationData",
    "EnclaveReport",
    "QeReportCertificationData",
    "Quote",
    "QuoteHeader",
    "SignatureData",
    "TdReport",
    "TdReport10",
    "TdReport15",
    "TdReportStruct",
    "decode_enclave_report",
    "decode_header",
    "decode_quote",
    "decode_td_report",
    "decode_tdreport",
    "encode_quote",
    "quote_bytes",
]
