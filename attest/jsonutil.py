"""One JSON decoding helper for every untrusted document the attestation side reads.

``json.loads`` signals malformed text with ``ValueError`` but deeply nested text (``[[[[…`` a few thousand
deep) with ``RecursionError``, which is no ``ValueError`` and would escape every ``except ValueError`` as a
bug (UNKNOWN on the verifier, a traceback in the CLI). ``loads_json`` turns both into the caller's own error
type, so each package keeps raising only its documented exceptions.

It also reads JSON as strictly as the peers whose documents it shares (trustee's KBS and dcap-qvl parse with
``serde_json``; RFC 8259 §4, RFC 7515 §4): an object with a repeated member name is refused (Python would keep
the last one, another parser the first: two readers of one document must not see different values), so are
``NaN`` and ``Infinity`` (not JSON), bytes that are not UTF-8 (``json.loads`` would guess UTF-16 or UTF-32,
or skip a byte order mark) and integers of more than ``MAX_INT_DIGITS`` digits (docs/conventions.md §6,
"verifier documents"; docs/kbs.md §5).
"""

from __future__ import annotations

import json
from typing import Any

MAX_INT_DIGITS = 4300  # Python's own bound on int() of a string; said here in the refusal's own words


class _Refusal(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, value in pairs:
        if name in doc:
            shown = name if len(name) <= 64 else name[:63] + "…"
            raise _Refusal(f"member {shown!r} appears twice in one object")
        doc[name] = value
    return doc


def _constant(name: str) -> Any:
    raise _Refusal(f"{name} is not a json value")


def _integer(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:
        raise _Refusal(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def loads_json(text: str | bytes, what: str, error: type[Exception]) -> Any:
    """``json.loads(text)``, raising ``error(f"{what} is not json: …")`` for malformed or too deeply nested
    text, repeated member names, ``NaN``/``Infinity``, huge integers and bytes that are not UTF-8."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer)
    except RecursionError:
        raise error(f"{what} is not json: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError and the refusals above
        raise error(f"{what} is not json: {exc}") from None
