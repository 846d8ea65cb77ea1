"""Key broker: resources released only to verified tokens, sealed to the TD's ephemeral key."""

from attest.formats.sealed_secret import ALG, EnvelopeError, SealedSecret, open_sealed, seal
from attest.verifier.kbs.policy import ResourcePolicy, ResourcePolicyError, parse_resource_policy

__all__ = [
    "ALG",
    "EnvelopeError",
    "ResourcePolicy",
    "ResourcePolicyError",
    "SealedSecret",
    "open_sealed",
    "parse_resource_policy",
    "seal",
]
