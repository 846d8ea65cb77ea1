"""A small declarative schema for the JSON documents an administrator hands the verifier (docs/conventions.md
§6, §7): appraisal policies (``attest.verifier.appraise.options``) and resource policies
(``attest.verifier.kbs.policy``).

A document is checked in full before any of it is used: its size (the UTF-8 text, before decoding), then
every member against the schema. Objects name every member they allow (unknown members are refused); every
value has a type and a range (integers are never booleans, strings have a length bound and usually an ASCII
pattern, so a stored string is always valid UTF-8 and hashable); lists hold only such scalars and have a
maximum length. A failure raises the caller's error with the path of the offending value
(``reference_values.mr_td[2]: must be 96 hex digits``).

Hand-written rather than the ``jsonschema`` package: the two schemas are small and flat, this keeps the
runtime dependencies at gRPC and cryptography (jsonschema brings attrs, referencing, rpds-py and
jsonschema-specifications), it checks what JSON Schema cannot say directly (hex of an exact byte size,
integers that are not booleans) and its messages name the path in the project's terms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from attest.jsonutil import loads_json

Fail = Callable[[str], Exception]

NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
"""Names of policies and reference-value sets."""
HEX_DIGITS = re.compile(r"[0-9A-Fa-f]*")


class TooLarge(ValueError):
    """A document over its size limit, found before it is decoded; ``metadata`` gives ``limit`` and ``size``
    in bytes (RESOURCE_EXHAUSTED, docs/conventions.md §6, §7)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.metadata = {"limit": str(limit), "size": str(size)}


class Schema(Protocol):
    def check(self, value: object, path: str, fail: Fail) -> Any:
        """``value`` if it conforms; else ``fail(message)`` is raised."""


def _where(path: str) -> str:
    return f"{path}: " if path else ""


@dataclass(frozen=True)
class Bool:
    def check(self, value: object, path: str, fail: Fail) -> bool:
        if not isinstance(value, bool):
            raise fail(f"{_where(path)}must be true or false")
        return value


@dataclass(frozen=True)
class Int:
    minimum: int
    maximum: int

    def check(self, value: object, path: str, fail: Fail) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"{_where(path)}must be an integer")
        if not self.minimum <= value <= self.maximum:
            raise fail(f"{_where(path)}must be {self.minimum}..{self.maximum}")
        return value


@dataclass(frozen=True)
class Str:
    """A string of 1..``max_length`` characters matching ``pattern`` (whole string), or one of ``choices``."""

    max_length: int = 128
    pattern: re.Pattern[str] | None = None
    choices: frozenset[str] | None = None

    def check(self, value: object, path: str, fail: Fail) -> str:
        if not isinstance(value, str):
            raise fail(f"{_where(path)}must be a string")
        if self.choices is not None:
            if value not in self.choices:
                raise fail(f"{_where(path)}must be one of {sorted(self.choices)}")
            return value
        if not 1 <= len(value) <= self.max_length:
            raise fail(f"{_where(path)}must be 1..{self.max_length} characters")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise fail(f"{_where(path)}must match {self.pattern.pattern}")
        return value


@dataclass(frozen=True)
class Hex:
    """Exactly ``size`` bytes as ``2 * size`` hex digits (either case, nothing else)."""

    size: int

    def check(self, value: object, path: str, fail: Fail) -> str:
        if not isinstance(value, str) or len(value) != 2 * self.size or not HEX_DIGITS.fullmatch(value):
            raise fail(f"{_where(path)}must be {2 * self.size} hex digits ({self.size} bytes)")
        return value


@dataclass(frozen=True)
class Const:
    value: int

    def check(self, value: object, path: str, fail: Fail) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value != self.value:
            raise fail(f"{_where(path)}must be {self.value}")
        return value


@dataclass(frozen=True)
class Array:
    item: Schema
    max_items: int
    min_items: int = 0

    def check(self, value: object, path: str, fail: Fail) -> list[Any]:
        if not isinstance(value, list):
            raise fail(f"{_where(path)}must be a list")
        if not self.min_items <= len(value) <= self.max_items:
            raise fail(f"{_where(path)}must hold {self.min_items}..{self.max_items} values")
        return [self.item.check(v, f"{path}[{i}]", fail) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Object:
    """A JSON object whose members are all optional and all named here; any other member is refused."""

    members: Mapping[str, Schema]

    def check(self, value: object, path: str, fail: Fail) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise fail(f"{_where(path)}must be a json object")
        unknown = sorted(set(value) - set(self.members))
        if unknown:
            where = f"{path}." if path else ""
            raise fail(f"unknown member {where}{unknown[0]!r} (known: {', '.join(sorted(self.members))})")
        return {k: self.members[k].check(v, f"{path}.{k}" if path else k, fail) for k, v in value.items()}


def load(
    text: str, what: str, schema: Schema, fail: type[Exception], *, max_size: int, too_large: type[TooLarge]
) -> dict[str, Any]:
    """Decode and check a document: ``too_large`` when its UTF-8 text exceeds ``max_size`` bytes, ``fail``
    when it is not JSON or does not follow ``schema``. Empty (or blank) text is the empty object."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise too_large(f"{what} is {size} bytes, at most {max_size}", size=size, limit=max_size)
    doc = loads_json(text, what, fail) if text.strip() else {}
    checked: dict[str, Any] = schema.check(doc, "", fail)
    return checked
