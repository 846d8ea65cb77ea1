"""A guest that is only waiting notices a dead host within a second (docs/cli.md ``tdxsim guest``).

A real host process is SIGKILLed while the guest sleeps (``sleep 30`` in a workload) or sits in keep-alive
mode: its Attach lifeline ends as the host's connection closes, the wait ends with it, and the guest exits 1
with the TdGone error (reason ``LIFELINE_LOST``) instead of noticing 30 s later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, HostProcess
from wire.v1 import host_pb2, host_pb2_grpc

pytestmark = pytest.mark.timeout(60)

NOTICE = 1.0  # seconds from the host's death to the guest's error line
IMAGE = {"memory": "16M", "payload": [{"gpa": "0x100000", "text": "guest kernel"}]}


def _guest(host: HostProcess, tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    image = tmp_path / "image.json"
    image.write_text(json.dumps(IMAGE))
    cmd = [
        sys.executable,
        "-m",
        "tdxsim.cli",
        "guest",
        "--host",
        host.address,
        "--image",
        str(image),
        *command,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill_host_and_time_the_exit(host: HostProcess, guest: subprocess.Popen[str]) -> tuple[float, str, str]:
    """SIGKILL the host; (seconds until the guest exited, its remaining stdout, its stderr)."""
    time.sleep(0.3)  # the guest is inside its wait
    killed = time.monotonic()
    host.proc.kill()
    try:
        out, err = guest.communicate(timeout=30)
    finally:
        if guest.poll() is None:
            guest.kill()
    seconds = time.monotonic() - killed
    print(f"the guest exited {seconds * 1e3:.0f} ms after the host was killed")
    return seconds, out, err


def _wait_for_a_td(host: HostProcess, timeout: float = 60.0) -> None:
    """Until the host holds a runnable TD (the guest finalized it), however loaded the machine is, and then
    half a second for the guest to attach its lifeline and start the workload."""
    stub = host_pb2_grpc.HostServiceStub(host.admin_channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tds = stub.ListTds(host_pb2.ListTdsRequest(), timeout=10).tds
        if any(td.op_state == "RUNNABLE" for td in tds):
            time.sleep(0.5)
            return
        time.sleep(0.05)
    raise AssertionError(f"no TD launched on the host within {timeout} s")


def test_a_sleeping_workload_fails_with_lifeline_lost_as_soon_as_the_host_dies(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    script = tmp_path / "sleep.tdx"
    script.write_text("sleep 30\nreport\n")
    guest = _guest(host, tmp_path, "run", str(script))
    assert guest.stdout is not None
    assert "launched" in guest.stdout.readline()
    seconds, out, err = _kill_host_and_time_the_exit(host, guest)
    assert guest.returncode == 1, (out, err)
    assert seconds < NOTICE, f"noticed {seconds:.2f} s after the host died"
    assert "FAIL line 1    sleep 30" in out and "LIFELINE_LOST" in out, out
    assert "0/2 steps passed" in out and "Traceback" not in err


def test_a_sleeping_workload_in_json_names_the_reason(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    script = tmp_path / "sleep.tdx"
    script.write_text("sleep 30\n")
    guest = _guest(host, tmp_path, "--json", "run", str(script))
    _wait_for_a_td(host)  # launched: --json prints nothing before the end, so ask the host
    seconds, out, err = _kill_host_and_time_the_exit(host, guest)
    assert guest.returncode == 1, (out, err)
    assert seconds < NOTICE + 0.3
    (step,) = json.loads(out)["steps"]
    assert (step["ok"], step["reason"]) == (False, "LIFELINE_LOST")


def test_keep_alive_mode_exits_1_as_soon_as_the_host_dies(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    host = host_factory()
    guest = _guest(host, tmp_path)
    assert guest.stdout is not None
    assert "running" in guest.stdout.readline()
    seconds, _, err = _kill_host_and_time_the_exit(host, guest)
    assert guest.returncode == 1, err
    assert seconds < NOTICE, f"noticed {seconds:.2f} s after the host died"
    assert err.startswith("tdxsim guest: the host ended TD ") and "LIFELINE_LOST" in err, err
    assert len(err.splitlines()) == 1


def test_a_short_sleep_on_a_live_host_passes(
    host_factory: Callable[..., HostProcess], tmp_path: Path
) -> None:
    """The control: while the host lives, a sleep simply passes."""
    host = host_factory()
    script = tmp_path / "sleep.tdx"
    script.write_text("sleep 0.2\n")
    guest = _guest(host, tmp_path, "run", str(script))
    out, err = guest.communicate(timeout=30)
    assert guest.returncode == 0, (out, err)
    assert "1/1 steps passed" in out
    host.stop(signal.SIGTERM)
