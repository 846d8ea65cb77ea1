"""One JSON decoding helper for every untrusted document the attestation side reads.

``json.loads`` signals malformed text with ``ValueError`` but deeply nested text (``[[[[…`` a few thousand
deep) with ``RecursionError``, which is no ``ValueError`` and would escape every ``except ValueError`` as a
bug (UNKNOWN on the verifier, a traceback in the CLI). ``loads_json`` turns both into the caller's own error
type, so each package keeps raising only its documented exceptions.
"""

from __future__ import annotations

import json
from typing import Any


def loads_json(text: str | bytes, what: str, error: type[Exception]) -> Any:
    """``json.loads(text)``, raising ``error(f"{what} is not json: …")`` for malformed or too deeply nested
    text (and for bytes that are not UTF-8)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{what} is not json: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise error(f"{what} is not json: {exc}") from None
