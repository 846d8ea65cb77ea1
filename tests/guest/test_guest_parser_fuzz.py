"""The guest's own parsers (TD images, workload files) raise only ``ImageError`` / ``WorkloadError``, whatever
the document holds, so ``tdxsim guest`` answers one line and exit 2 (docs/cli.md).

Random JSON in every image member and random lines of workload words (hypothesis, derandomized and bounded),
plus the escapes found: a ``gpaw`` beyond 32 bits (protobuf's ValueError), a NUL in a file name (ValueError
from the OS layer) and a lone surrogate in text (UnicodeEncodeError).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guest.image import ImageError, parse_image
from guest.workload import WorkloadError, parse_workload

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
EDGES = st.sampled_from([2**32, 2**64, -1, "1e400K", "nanK", "0x" + "f" * 20, "\ud800", "a\x00b"])
MEMBERS = [
    "name",
    "memory",
    "attributes",
    "xfam",
    "gpaw",
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "payload",
]
PAYLOAD = st.dictionaries(
    st.sampled_from(["gpa", "file", "text", "hex", "measure", "x"]), JSON | EDGES, max_size=3
)


@st.composite
def images(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"memory": draw(st.sampled_from(["64M", 4096, "0x100000"]) | JSON)}
    for member in draw(st.lists(st.sampled_from(MEMBERS), max_size=4)):
        doc[member] = draw(st.lists(PAYLOAD, max_size=3) if member == "payload" else JSON | EDGES)
    return doc


@FUZZ
@given(images())
def test_random_images_raise_only_image_errors(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ImageError):
        parse_image(doc, Path("/nonexistent"))


WORDS = st.sampled_from(
    ["accept", "write", "read", "convert", "extend", "report", "quote", "sleep", "attest", "expect-error",
     "expect", "shared:0x1000", "0x1000", "4K", "fill:0*4K", "hex:zz", "text:\ud800", "file:a\x00b",
     "file:/", "1e400", "nan", "-1", "policy", "secret", "'", '"', "#", "private", "allow-accepted",
     "99999999999999999999999"]
)  # fmt: skip


@FUZZ
@given(st.lists(st.lists(WORDS | st.text(max_size=6), max_size=6).map(" ".join), max_size=4).map("\n".join))
def test_random_workloads_raise_only_workload_errors(text: str) -> None:
    with contextlib.suppress(WorkloadError):
        parse_workload(text, Path("/nonexistent"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"memory": 4096, "gpaw": 2**32}, "gpaw: 48 or 52"),
        ({"memory": 4096, "name": "\ud800"}, "name: not valid unicode text"),
        (
            {"memory": 4096, "payload": [{"gpa": 0, "text": "\ud800"}]},
            r"payload\[0\].text: not valid unicode",
        ),
        (
            {"memory": 4096, "payload": [{"gpa": 0, "file": "a\x00b"}]},
            r"payload\[0\].file: not a usable file",
        ),
    ],
)
def test_image_escapes_are_image_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_image(doc, Path("/nonexistent"))


@pytest.mark.parametrize(
    ("line", "message"),
    [("write 0 file:a\x00b", "not a usable file name"), ("extend 0 text:\ud800", "unicode")],
)
def test_workload_escapes_are_workload_errors(line: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_workload(line, Path("/nonexistent"))
