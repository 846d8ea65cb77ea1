"""The example scripts against a real host, the shipped image and workload, the benchmark rows, and the pure
parts of the guest library (range bookkeeping, image and workload parsing)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from guest_helpers import make_pki

from guest import workload
from guest.image import ATTR_DEBUG, ATTR_SEPT_VE_DISABLE, ImageError, load_image, parse_image
from guest.memory import PrivateAllocator, RangeSet
from guest.workload import (
    MAX_FILL,
    Accept,
    Attest,
    Gpa,
    Read,
    Sleep,
    WorkloadError,
    Write,
    load_workload,
    parse_data,
    parse_workload,
)
from tdxsim.bench.guest import bench_guest
from tests.conftest import ROOT, HostProcess

pytestmark = pytest.mark.timeout(90)
EXAMPLES = ROOT / "examples"


def run_example(name: str, host: HostProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--host", host.address, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_example_scripts_launch_convert_and_quote(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    plain = host_factory()
    launched = run_example("launch_td.py", plain)
    assert launched.returncode == 0, launched.stderr
    assert "TDREPORT: 1024 bytes, MRTD" in launched.stdout
    converted = run_example("convert_memory.py", plain)
    assert converted.returncode == 0, converted.stderr
    assert "(the secret is gone)" in converted.stdout
    no_qgs = run_example("get_quote.py", plain)
    assert no_qgs.returncode == 3 and "QGS_UNAVAILABLE" in no_qgs.stdout
    make_pki(tmp_path / "pki")
    quoting = host_factory("--pki", str(tmp_path / "pki"))
    quoted = run_example("get_quote.py", quoting, "--out", str(tmp_path / "quote.bin"))
    assert quoted.returncode == 0, quoted.stderr
    assert "REPORTDATA bound: True" in quoted.stdout
    assert (tmp_path / "quote.bin").stat().st_size > 1024


def test_the_shipped_image_and_workload_run_to_completion(host_factory: Callable[..., HostProcess]) -> None:
    host = host_factory()
    image, script = str(EXAMPLES / "image.json"), str(EXAMPLES / "workload.tdx")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tdxsim.cli",
            "guest",
            "--host",
            host.address,
            "--image",
            image,
            "--json",
            "run",
            script,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] and len(doc["steps"]) == len(parse_workload((EXAMPLES / "workload.tdx").read_text()))


def test_bench_guest_rows_have_the_documented_names_and_fields() -> None:
    rows = bench_guest(big_rounds=3, small_rounds=20)
    assert [r["name"] for r in rows] == ["private_write_1mib", "private_read_1mib", "small_read_p50"]
    for row in rows:
        assert set(row) == {"name", "value", "unit", "limit", "limit_name", "ratio", "target", "met"}
        assert isinstance(row["value"], float) and isinstance(row["limit"], float) and row["limit"] > 0
    assert [r["unit"] for r in rows] == ["MB/s", "MB/s", "us"]


def test_range_set_adds_removes_and_finds_missing_parts() -> None:
    ranges = RangeSet([(0, 10), (20, 30)])
    ranges.add(10, 20)
    assert list(ranges) == [(0, 30)]
    ranges.remove(5, 25)
    assert list(ranges) == [(0, 5), (25, 30)]
    assert ranges.missing(0, 40) == [(5, 25), (30, 40)]
    assert ranges.contains(25, 30) and not ranges.contains(4, 6)


def test_private_allocator_skips_reserved_ranges_and_reports_what_to_accept() -> None:
    alloc = PrivateAllocator(1 << 20, reserved=[(0, 8192)], preaccepted=[(0, 8192), (16384, 20480)])
    gpa, missing = alloc.alloc(3 * 4096)
    assert gpa == 8192 and missing == [(8192, 16384)]
    alloc.mark_accepted(8192, 16384)
    alloc.free(gpa)
    assert alloc.alloc(4096) == (8192, [])
    alloc.mark_converted_to_shared(8192, 12288)
    assert alloc.accepted.missing(8192, 12288) == [(8192, 12288)]


def test_image_fields_become_the_td_parameters_and_payload() -> None:
    spec = load_image(EXAMPLES / "image.json")
    assert spec.image.memory_bytes == 64 << 20
    assert spec.image.attributes == ATTR_SEPT_VE_DISABLE
    assert spec.image.mrconfigid[-2:] == b"\xc0\xde"
    assert spec.image.payload[0].data.startswith(b"tdxsim example")
    assert [p.measure for p in spec.image.payload] == [True, False]
    debug = parse_image({"memory": 4096 * 16, "attributes": {"debug": True, "sept_ve_disable": False}})
    assert debug.image.attributes == ATTR_DEBUG
    for bad in ({"memory": "12K", "mrowner": "00"}, {"memory": "1M", "colour": 1}, {"memory": 100}):
        with pytest.raises(ImageError):
            parse_image(bad)


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"debug": "false"}, "debug"),  # a non-empty string: it used to make a DEBUG TD
        ({"debug": 0}, "debug"),
        ({"sept_ve_disable": "true"}, "sept_ve_disable"),
        ({"debug": False, "sept_ve_disable": None}, "sept_ve_disable"),
    ],
)
def test_image_attribute_flags_must_be_json_booleans(flags: dict[str, object], field: str) -> None:
    with pytest.raises(ImageError, match=rf"^attributes\.{field}: true or false, not "):
        parse_image({"memory": "1M", "attributes": flags})


def test_image_attribute_flags_default_and_combine() -> None:
    def bits(flags: dict[str, object]) -> int:
        return parse_image({"memory": "1M", "attributes": flags}).image.attributes

    assert bits({}) == ATTR_SEPT_VE_DISABLE
    assert bits({"debug": False}) == ATTR_SEPT_VE_DISABLE
    assert bits({"debug": True}) == ATTR_DEBUG | ATTR_SEPT_VE_DISABLE
    assert bits({"sept_ve_disable": False}) == 0


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ("infK", "memory: 'infK' is not a number"),
        ("0x10000000000000000", "memory: '0x10000000000000000' does not fit in 64 bits"),
        (1 << 64, f"memory: {1 << 64} does not fit in 64 bits"),
    ],
)
def test_image_numbers_beyond_64_bits_are_image_errors(memory: object, message: str) -> None:
    with pytest.raises(ImageError) as err:
        parse_image({"memory": memory})
    assert str(err.value) == message


def test_an_image_file_that_is_not_utf8_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: not UTF-8 text"


def test_workload_lines_parse_with_comments_quotes_and_expected_errors() -> None:
    steps = parse_workload(
        '# c\nwrite shared:0x1000 "text:a b"  # tail\nquote expect-error QGS_UNAVAILABLE\n'
    )
    assert [(s.line, s.op, s.args, s.expect_error) for s in steps] == [
        (2, "write", ("shared:0x1000", "text:a b"), None),
        (3, "quote", (), "QGS_UNAVAILABLE"),
    ]
    assert parse_data("fill:0xab*2K", Path(".")) == b"\xab" * 2048
    assert parse_data("hex:00ff", Path(".")) == b"\x00\xff"
    for bad in ("accept 0x1000\n", "frobnicate\n", 'write 0 "text:unterminated\n'):
        with pytest.raises(WorkloadError):
            parse_workload(bad)


BAD_LINES = [
    ("sleep -1", "line 2: sleep SECONDS must be 0..86400, got '-1'"),
    ("sleep nan", "line 2: sleep SECONDS must be 0..86400, got 'nan'"),
    ("sleep inf", "line 2: sleep SECONDS must be 0..86400, got 'inf'"),
    ("sleep 1e300", "line 2: sleep SECONDS must be 0..86400, got '1e300'"),
    ("sleep soon", "line 2: sleep SECONDS: 'soon' is not a number"),
    ("write 0x800000 fill:0*99999999999", "line 2: fill count 99999999999 is over the 64 MiB limit"),
    ("write 0x800000 fill:0*64M1", "line 2: fill count: '64M1' is not a number"),
    ("write 0x800000 fill:256*4", "line 2: fill byte 256 is not 0..255"),
    ("write 0x800000 fill:1", "line 2: fill is fill:BYTE*COUNT"),
    ("write 0x800000 hex:abc", "line 2: 'abc' is not hex"),
    ("write 0x800000 file:missing.bin", "line 2: cannot read missing.bin: No such file or directory"),
    ("write 0x800000 file:.", "line 2: cannot read .: Is a directory"),
    ("write 0x800000 blob", "line 2: data 'blob' needs a kind: text:, hex:, fill: or file:"),
    ("write 0x800000 blob:x", "line 2: unknown data kind 'blob'"),
    ("write shared:zz text:a", "line 2: GPA: 'zz' is not a number"),
    ("write 0x10000000000000000 text:a", "line 2: GPA: '0x10000000000000000' does not fit in 64 bits"),
    ("read 0x800000 0", "line 2: read LEN must be at least 1"),
    ("read 0x800000 infK", "line 2: LEN: 'infK' is not a number"),
    ("read 0x800000 4 expecting text:a", "line 2: read GPA LEN [expect DATA]"),
    ("read 0x800000 4 expect", "line 2: read GPA LEN [expect DATA]"),
    ("read 0x800000 4 expect hex:0", "line 2: '0' is not hex"),
    ("accept 0x800000 2M allow", "line 2: accept GPA SIZE [allow-accepted], not 'allow'"),
    ("accept 0x800000 -4K", "line 2: SIZE: '-4K' is negative"),
    ("convert public 0x800000 2M", "line 2: convert shared|private GPA SIZE, not 'public'"),
    ("extend x text:a", "line 2: INDEX: 'x' is not a number"),
    ("report text:" + "a" * 65, "line 2: REPORTDATA is at most 64 bytes, 'text:" + "a" * 65 + "' is 65"),
    ("quote fill:0*65", "line 2: REPORTDATA is at most 64 bytes, 'fill:0*65' is 65"),
    ("attest 127.0.0.1:1 policy", "line 2: attest VERIFIER [policy NAME] [secret PATH [expect DATA]]"),
    ("attest 127.0.0.1:1 polcy prod", "line 2: attest VERIFIER [policy NAME] [secret PATH [expect DATA]]"),
    (
        "attest 127.0.0.1:1 policy a policy b",
        "line 2: attest VERIFIER [policy NAME] [secret PATH [expect DATA]]",
    ),
    ("attest 127.0.0.1:1 expect text:k", "line 2: 'expect' checks a secret: give 'secret PATH' first"),
    ("attest 127.0.0.1:1 secret a/b expect hex:g", "line 2: 'g' is not hex"),
    ("report expect-error ''", "line 2: expect-error needs a REASON"),
    ("expect-error EIO", "line 2: expect-error follows a step"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES, ids=[line for line, _ in BAD_LINES])
def test_every_argument_is_checked_when_the_workload_is_loaded(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "w.tdx"
    path.write_text(f"accept 0x800000 2M\n{line}\n")
    with pytest.raises(WorkloadError) as err:
        load_workload(path)
    assert str(err.value) == message


def test_loaded_steps_carry_their_checked_arguments(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x01\x02\x03")
    path = tmp_path / "w.tdx"
    path.write_text(
        "accept 0x800000 2M allow-accepted\n"
        "write shared:0x1000 file:blob.bin\n"
        "read 0x800000 4K expect fill:0*4K\n"
        "sleep 0.25\n"
        "attest 127.0.0.1:9 policy prod secret prod/key expect text:k\n"
        "write 0 fill:0xab*64M\n"
    )
    steps = load_workload(path)
    assert steps[0].params == Accept(0x800000, 2 << 20, allow_accepted=True)
    write = steps[1].params
    assert isinstance(write, Write) and write.gpa == Gpa(0x1000, shared=True)
    assert (write.data.size, write.data.load()) == (3, b"\x01\x02\x03")  # relative to the workload file
    read = steps[2].params
    assert isinstance(read, Read) and (read.gpa, read.length) == (Gpa(0x800000), 4096)
    assert read.expect is not None and read.expect.load() == bytes(4096)
    assert steps[3].params == Sleep(0.25)
    attest = steps[4].params
    assert isinstance(attest, Attest)
    assert (attest.verifier, attest.policy, attest.secret) == ("127.0.0.1:9", "prod", "prod/key")
    assert attest.expect is not None and attest.expect.load() == b"k"
    big = steps[5].params
    assert isinstance(big, Write) and big.data.size == MAX_FILL  # the cap itself is allowed


def test_a_workload_file_that_is_not_utf8_is_a_workload_error(tmp_path: Path) -> None:
    path = tmp_path / "w.tdx"
    path.write_bytes(b"sleep 1\n\xff\n")
    with pytest.raises(WorkloadError) as err:
        load_workload(path)
    assert str(err.value) == f"{path}: not UTF-8 text"


def _docstring_step_forms() -> set[str]:
    """The first column of guest.workload's step table (a cell continues on a line starting with ``[``)."""
    assert workload.__doc__ is not None
    table = workload.__doc__.split("what the guest does\n", 1)[1].split("\n\n", 1)[0]
    forms: list[str] = []
    for row in table.splitlines():
        if not row.startswith("``"):
            continue
        cell = row.split("``")[1]
        if cell.startswith("["):
            forms[-1] += " " + cell
        else:
            forms.append(cell)
    return set(forms)


def test_the_examples_readme_has_every_workload_step_of_the_docstring_and_every_guest_command() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    readme_forms = {row.split("`")[1].replace("\\|", "|") for row in rows if row.split("`")[1][:1].islower()}
    steps = _docstring_step_forms()
    assert "attest VERIFIER [policy NAME] [secret PATH [expect DATA]]" in steps
    assert {form.split()[0] for form in steps} == {
        "accept", "write", "read", "convert", "extend", "report", "quote", "sleep", "attest", "kbs"
    }  # fmt: skip
    assert steps <= readme_forms, steps - readme_forms
    assert "tdxsim guest --image examples/image.json mrtd" in readme
    for example in sorted(EXAMPLES.glob("*.tdx")) + sorted(EXAMPLES.glob("*.py")):
        assert f"`{example.name}" in readme, example.name


def test_a_deeply_nested_image_file_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    path.write_text("[" * 2000)
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert str(err.value) == f"{path}: not JSON: nested too deeply"
