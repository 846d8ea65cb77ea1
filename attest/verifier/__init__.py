"""The remote verifier (docs/attestation.md): DCAP verification of quotes (``dcap``), appraisal against
policies (``appraise``), result tokens (``token``), the key broker (``kbs``), persistence (``store``), the
gRPC service process (``service``), and the offline ``tdxsim quote`` functions (``offline``).
"""
