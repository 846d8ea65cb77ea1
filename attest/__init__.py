"""tdxsim attestation side: quote codec, DCAP verification and (later) appraisal, tokens and key broker.

Layering follows style.md "What tdxsim takes from them": ``codec`` (bytes <-> structures, shape checks only)
<- ``verify`` (signatures, chains, collateral, TCB status; no policy) <- ``cli`` (JSON-ready functions).
Facts come from attestation.md; section numbers are cited in each module.
"""
