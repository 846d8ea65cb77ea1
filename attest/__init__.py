"""The attestation side, in three parts (docs/attestation.md):

- ``attest.formats``: the byte and document formats the platform side and the verifier both use — TDX DCAP
  quotes and TDREPORTs, the PCK certificate's SGX extension, collateral, the CC event log, the REPORTDATA
  binding rule. Bytes in, structures out, shape checks only;
- ``attest.intel``: the simulated Intel infrastructure — the PCS that issues certificates and signs
collateral,
  and the quoting enclave's signing logic;
- ``attest.verifier``: the remote verifier — DCAP verification in Intel's order, appraisal policies, result
  tokens, the key broker, its store and the gRPC service process.

``formats`` imports neither of the others; ``intel`` and ``verifier`` do not import each other.
"""
