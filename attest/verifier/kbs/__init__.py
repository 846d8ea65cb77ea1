"""Key broker: resources released only to verified tokens, as a JWE to the TD's ephemeral key
(``attest.formats.secret_jwe``), under resource policies (docs/attestation.md §13, docs/kbs.md §4)."""

from attest.verifier.kbs.policy import ResourcePolicy, ResourcePolicyError, parse_resource_policy

__all__ = ["ResourcePolicy", "ResourcePolicyError", "parse_resource_policy"]
