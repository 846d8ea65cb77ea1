"""TD images: the JSON file a guest is launched from, turned into ``tdxsim.v1.TdImage`` for
``HostService.LaunchTd`` (the host ADDs and EXTENDs the payload into MRTD, docs/memory-model.md §6.2, §8).

A TD image stands for what QEMU is given for a TD: the TD parameters of ``KVM_TDX_INIT_VM`` (attributes, XFAM,
MRCONFIGID/MROWNER/MROWNERCONFIG, GPAW) and the initial private memory (TDVF, kernel, configuration), each
region measured page by page (``KVM_TDX_INIT_MEM_REGION`` with ``KVM_TDX_MEASURE_MEMORY_REGION``) or only by
its GPA. The same file always gives the same MRTD; changing one payload byte of a measured region changes it.

Format (JSON object; sizes and numbers are integers or strings such as ``"0x100000"``, ``"64M"``)::

    {
      "name": "demo",                    optional; the TD's name on the host
      "memory": "64M",                   required; guest memory from GPA 0 (bytes, K/M/G suffixes)
      "attributes": {"debug": false, "sept_ve_disable": true},
                                         JSON true/false only, or a number; default SEPT_VE_DISABLE
                                         only (0x10000000, as QEMU);
                                         DEBUG = bit 0, SEPT_VE_DISABLE = bit 28
      "xfam": "0x61ae7",                 optional (host default 0x61ae7)
      "gpaw": 48,                        optional, 48 or 52 (shared bit 47 or 51)
      "mrconfigid": "<96 hex digits>",   optional 48-byte values, default zeros
      "mrowner": "...", "mrownerconfig": "...",
      "payload": [                       initial pages, each at a page-aligned private GPA
        {"gpa": "0x100000", "file": "kernel.bin", "measure": true},   file relative to the image file
        {"gpa": "0x200000", "text": "console=hvc0"},                    UTF-8 text
        {"gpa": "0x201000", "hex": "deadbeef", "measure": false}        measure: default true
      ]
    }

``measure: false`` regions are still ADDed (their GPAs enter MRTD) but their contents are not EXTENDed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire.tdx_abi import MR_SIZE
from wire.tdx_abi import PAGE_SIZE as PAGE
from wire.v1 import host_pb2

ATTR_DEBUG = 1 << 0
ATTR_SEPT_VE_DISABLE = 1 << 28
DEFAULT_ATTRIBUTES = ATTR_SEPT_VE_DISABLE
MAX_NUMBER = (1 << 64) - 1
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_KEYS = {"name", "memory", "attributes", "xfam", "gpaw", "mrconfigid", "mrowner", "mrownerconfig", "payload"}


class ImageError(ValueError):
    """The image file cannot be used; the message names the field."""


def parse_number(value: object, what: str) -> int:
    """An integer, or a string: decimal, ``0x`` hex, or a size with a K/M/G/T suffix (binary units); 0 to
    2**64 - 1 (every number an image or a workload gives is a 64-bit field)."""
    if isinstance(value, bool):
        raise ImageError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper().replace("_", "")
        text = text.removesuffix("B").removesuffix("I") if text[-2:] in ("IB", "KB", "MB", "GB") else text
        try:
            if text.startswith("0X"):
                number = int(text, 16)
            elif text and text[-1] in _UNITS:
                number = int(float(text[:-1]) * _UNITS[text[-1]])
            else:
                number = int(text)
        except (ValueError, OverflowError):  # OverflowError: "infK"
            raise ImageError(f"{what}: {value!r} is not a number") from None
    else:
        raise ImageError(f"{what}: expected a number, got {value!r}")
    if number < 0:
        raise ImageError(f"{what}: {value!r} is negative")
    if number > MAX_NUMBER:
        raise ImageError(f"{what}: {value!r} does not fit in 64 bits")
    return number


def _hex48(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ImageError(f"{what}: expected {MR_SIZE * 2} hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ImageError(f"{what}: not hex") from None
    if len(raw) != MR_SIZE:
        raise ImageError(f"{what}: must be {MR_SIZE} bytes, got {len(raw)}")
    return raw


def _utf8(value: str, what: str) -> bytes:
    """``value`` as UTF-8; a lone surrogate (a JSON escape such as ``"\\ud800"``) is no text."""
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ImageError(f"{what}: not valid unicode text") from None


def _attributes(value: object) -> int:
    if isinstance(value, dict):
        unknown = set(value) - {"debug", "sept_ve_disable"}
        if unknown:
            raise ImageError(f"attributes: unknown flag(s) {sorted(unknown)}")
        flags = {"debug": False, "sept_ve_disable": True} | value
        for flag, on in flags.items():
            if not isinstance(on, bool):  # "false" is a non-empty string: it must not mean true
                raise ImageError(f"attributes.{flag}: true or false, not {on!r}")
        return (ATTR_DEBUG if flags["debug"] else 0) | (
            ATTR_SEPT_VE_DISABLE if flags["sept_ve_disable"] else 0
        )
    return parse_number(value, "attributes")


def _payload_data(entry: dict[str, Any], index: int, base: Path) -> bytes:
    sources = [k for k in ("file", "text", "hex") if k in entry]
    if len(sources) != 1:
        raise ImageError(f"payload[{index}]: give exactly one of file, text, hex")
    kind = sources[0]
    value = entry[kind]
    if not isinstance(value, str):
        raise ImageError(f"payload[{index}].{kind}: expected a string")
    if kind == "file":
        path = base / value
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ImageError(f"payload[{index}].file: cannot read {path}: {err.strerror}") from None
        except ValueError:  # a NUL in the name
            raise ImageError(f"payload[{index}].file: not a usable file name") from None
    elif kind == "text":
        data = _utf8(value, f"payload[{index}].text")
    else:
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise ImageError(f"payload[{index}].hex: not hex") from None
    if not data:
        raise ImageError(f"payload[{index}]: empty")
    return data


@dataclass(frozen=True)
class Image:
    name: str
    image: host_pb2.TdImage


def parse_image(doc: object, base: Path = Path(".")) -> Image:
    """Check a decoded image document and build the TdImage (``base``: where ``file`` paths start)."""
    if not isinstance(doc, dict):
        raise ImageError("an image is a JSON object")
    unknown = set(doc) - _KEYS
    if unknown:
        raise ImageError(f"unknown field(s) {sorted(unknown)}")
    if "memory" not in doc:
        raise ImageError("memory: required")
    memory = parse_number(doc["memory"], "memory")
    if memory == 0 or memory % PAGE:
        raise ImageError("memory: must be a positive multiple of 4096")
    image = host_pb2.TdImage(
        memory_bytes=memory, attributes=_attributes(doc.get("attributes", {"sept_ve_disable": True}))
    )
    if "xfam" in doc:
        image.xfam = parse_number(doc["xfam"], "xfam")
    if "gpaw" in doc:
        gpaw = parse_number(doc["gpaw"], "gpaw")
        if gpaw not in (48, 52):  # checked before the uint32 field would refuse it with a ValueError
            raise ImageError("gpaw: 48 or 52")
        image.gpaw = gpaw
    for field in ("mrconfigid", "mrowner", "mrownerconfig"):
        if field in doc:
            setattr(image, field, _hex48(doc[field], field))
    payload = doc.get("payload", [])
    if not isinstance(payload, list):
        raise ImageError("payload: expected a list")
    for index, entry in enumerate(payload):
        if not isinstance(entry, dict):
            raise ImageError(f"payload[{index}]: expected an object")
        extra = set(entry) - {"gpa", "file", "text", "hex", "measure"}
        if extra:
            raise ImageError(f"payload[{index}]: unknown field(s) {sorted(extra)}")
        gpa = parse_number(entry.get("gpa"), f"payload[{index}].gpa")
        data = _payload_data(entry, index, base)
        if gpa % PAGE or gpa + len(data) > memory:
            raise ImageError(f"payload[{index}]: 0x{gpa:x}+{len(data)} is unaligned or beyond memory")
        measure = entry.get("measure", True)
        if not isinstance(measure, bool):
            raise ImageError(f"payload[{index}].measure: true or false")
        image.payload.append(host_pb2.Payload(gpa=gpa, data=data, measure=measure))
    name = doc.get("name", "")
    if not isinstance(name, str):
        raise ImageError("name: expected a string")
    _utf8(name, "name")
    return Image(name, image)


def load_image(path: str | Path) -> Image:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ImageError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ImageError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ImageError(f"{path}: not JSON: {err}") from None
    except RecursionError:  # json.loads' signal for deeply nested arrays/objects; not a ValueError
        raise ImageError(f"{path}: not JSON: nested too deeply") from None
    return parse_image(doc, path.parent)


def expected_mrtd(image: host_pb2.TdImage) -> bytes:
    """The MRTD a TD launched from ``image`` will report, computed from the image alone, as a relying
    party computes its reference value (docs/memory-model.md §8): per payload page a TDH.MEM.PAGE.ADD block,
    and for measured pages 16 TDH.MR.EXTEND blocks each followed by its 256 bytes."""
    mrtd = hashlib.sha384()
    for payload in image.payload:
        data = payload.data + bytes(-len(payload.data) % PAGE)
        for page in range(0, len(data), PAGE):
            gpa = payload.gpa + page
            mrtd.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(104))
            if payload.measure:
                for chunk in range(0, PAGE, 256):
                    mrtd.update(
                        b"MR.EXTEND".ljust(16, b"\0") + (gpa + chunk).to_bytes(8, "little") + bytes(104)
                    )
                    mrtd.update(data[page + chunk : page + chunk + 256])
    return mrtd.digest()
