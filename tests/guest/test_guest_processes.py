"""Guests as separate processes: one host and three ``tdxsim guest … run`` processes at once, the lifeline
(SIGKILL of a guest process frees its TD, KeyID and pages), and the CLI's exit statuses and errors."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guest_helpers import stats

from tests.conftest import ROOT, HostProcess, start_host

pytestmark = pytest.mark.timeout(90)

IMAGE = {
    "memory": "48M",
    "attributes": {"sept_ve_disable": True},
    "payload": [{"gpa": "0x100000", "text": "guest kernel", "measure": True}],
}


def guest_cmd(host: HostProcess, image: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "tdxsim.cli",
        "guest",
        "--host",
        host.address,
        "--image",
        str(image),
        *extra,
    ]


def spawn(cmd: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def workload(name: str) -> str:
    return f"""
# guest {name}: private data, both conversions, accept, RTMRs, report
accept 0x800000 4M
write 0x800000 "text:secret of {name}"
write 0xa00000 fill:0x{name.encode().hex()[:2]}*1M
read 0x800000 {len("secret of " + name)} expect "text:secret of {name}"
read 0xa00000 1M expect fill:0x{name.encode().hex()[:2]}*1M
convert shared 0x800000 2M
write shared:0x800000 "text:shared {name}"
read shared:0x800000 {len("shared " + name)} expect "text:shared {name}"
convert private 0x800000 2M
read 0x800000 64 expect fill:0*64
accept 0x1000000 2M
accept 0x1000000 4K expect-error PAGE_ALREADY_ACCEPTED
extend 2 "text:app {name}"
extend 3 "text:runtime {name}"
report "text:{name}"
"""


def test_three_guest_processes_run_their_workloads_at_once_on_one_host(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    image = tmp_path / "image.json"
    image.write_text(json.dumps(IMAGE))
    procs = {}
    for name in ("alpha", "bravo", "charlie"):
        script = tmp_path / f"{name}.tdx"
        script.write_text(workload(name))
        procs[name] = spawn(guest_cmd(host, image, "--json", "--name", name, "run", str(script)))
    outputs = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (name, out, err)
            outputs[name] = json.loads(out)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    assert len({o["td_id"] for o in outputs.values()}) == 3
    assert len({o["mrtd"] for o in outputs.values()}) == 1  # same image, same MRTD
    for name, doc in outputs.items():
        assert doc["ok"] and all(step["ok"] for step in doc["steps"]) and len(doc["steps"]) == 15
        rtmrs = doc["steps"][-1]["values"]["rtmrs"]
        app = hashlib.sha384(f"app {name}".encode()).digest()
        runtime = hashlib.sha384(f"runtime {name}".encode()).digest()
        assert rtmrs[2] == hashlib.sha384(bytes(48) + app).hexdigest()
        assert rtmrs[3] == hashlib.sha384(bytes(48) + runtime).hexdigest()
        assert rtmrs[0] == rtmrs[1] == "00" * 48
    # Every guest exited, so the host destroyed every TD.
    deadline = time.monotonic() + 10
    while stats(host).tds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats(host).tds == 0


def test_sigkill_of_a_guest_process_tears_its_td_down_and_frees_keyid_and_pages(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    image = tmp_path / "image.json"
    image.write_text(json.dumps(IMAGE))
    baseline = stats(host)
    proc = spawn(guest_cmd(host, image, "--json"))
    try:
        assert proc.stdout is not None
        launched = json.loads(proc.stdout.readline())
        running = stats(host)
        assert (running.tds, running.keyids_free) == (1, baseline.keyids_free - 1)
        assert running.phys_pages_free < baseline.phys_pages_free
        killed = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        while time.monotonic() - killed < 10:
            now = stats(host)
            if (now.tds, now.keyids_free, now.phys_pages_free) == (
                0,
                baseline.keyids_free,
                baseline.phys_pages_free,
            ):
                break
            time.sleep(0.05)
        latency = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    after = stats(host)
    assert (after.tds, after.keyids_free, after.phys_pages_free) == (
        0,
        baseline.keyids_free,
        baseline.phys_pages_free,
    ), launched
    assert latency < 5.0
    print(f"teardown after SIGKILL: {latency * 1e3:.1f} ms")


def test_ctrl_c_stops_a_keep_alive_guest_cleanly_and_the_td_goes_with_it(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    image = tmp_path / "image.json"
    image.write_text(json.dumps(IMAGE))
    proc = spawn(guest_cmd(host, image))
    try:
        assert proc.stdout is not None
        assert "running" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while stats(host).tds and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stats(host).tds == 0


@pytest.fixture(scope="module")
def shared_host() -> Iterator[HostProcess]:
    """One host for the CLI error cases: each guest process destroys its TD when it exits."""
    host = start_host()
    try:
        yield host
    finally:
        host.stop()


@pytest.mark.parametrize(
    ("image_doc", "script", "status", "message"),
    [
        ({"memory": "48M", "payload": [{"gpa": 1, "text": "x"}]}, None, 2, "unaligned"),
        ({"payload": []}, None, 2, "memory: required"),
        ({"memory": "48M", "attributes": {"debug": "false"}}, None, 2, "attributes.debug: true or false"),
        (IMAGE, "jump 0x1000\n", 2, "line 1: unknown step 'jump'"),
        # Bad arguments are refused when the workload is loaded (exit 2), before a TD is launched.
        (IMAGE, "read 0x100000 5\nsleep -1\n", 2, "line 2: sleep SECONDS must be"),
        (IMAGE, "write 0x800000 fill:0*99999999999\n", 2, "line 1: fill count 99999999999 is over"),
        (IMAGE, "expect-error EIO\n", 2, "line 1: expect-error follows a step"),
        # What the TD or the host refuses while the workload runs is a failed step (exit 1).
        (IMAGE, "read 0x100000 5 expect text:nope\n", 1, "differs"),
        (IMAGE, "read 0x2000000 8\n", 1, "EIO"),  # unaccepted page, SEPT_VE_DISABLE: the TD is killed
        (IMAGE, "extend 4 text:x\n", 1, "BAD_RTMR_INDEX"),
    ],
)
def test_cli_errors_are_one_line_with_the_documented_exit_status(
    shared_host: HostProcess,
    tmp_path: Path,
    image_doc: dict[str, object],
    script: str | None,
    status: int,
    message: str,
) -> None:
    image = tmp_path / "image.json"
    image.write_text(json.dumps(image_doc))
    path = tmp_path / "w.tdx"
    path.write_text(script or "read 0x100000 5\n")
    result = subprocess.run(
        guest_cmd(shared_host, image, "run", str(path)), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == status, (result.stdout, result.stderr)
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    if status == 2:  # one line on stderr, and no TD was launched (the guest prints its TD once launched)
        assert result.stdout == ""
        assert result.stderr.startswith("tdxsim guest: ") and result.stderr.count("\n") == 1, result.stderr
