"""What ``cryptography`` raises for input it cannot parse or use: one definition for every parser of keys,
certificates and CRLs (docs/conventions.md §7).

Besides ``ValueError``, ``cryptography`` reports bad input as ``TypeError`` (an encrypted private key and no
password), ``UnsupportedAlgorithm`` (a key of an unknown type or on an unsupported curve, an unknown signature
algorithm) and the x509 errors that are no ``ValueError``: ``InvalidVersion``, ``DuplicateExtension`` and
``UnsupportedGeneralNameType``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

MALFORMED: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""Every exception ``cryptography`` raises for input it cannot parse or use."""
