"""Trusted: the TD quoting enclave (an SGX enclave on the host, docs/memory-model.md §8 "Remote
attestation", docs/attestation.md §5).

It accepts a TDREPORT only after the CPU has verified the report's MAC (EVERIFYREPORT2: the
report was made on this platform and not altered), then signs a DCAP quote with its attestation
key. The VMM reaches it only through :class:`~host.qe.enclave.TdQuotingEnclave.get_quote`.
"""
