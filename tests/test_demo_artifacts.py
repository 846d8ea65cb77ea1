"""``tdxsim demo --json --artifacts DIR`` for tools: every stage from its events, every quote verified by
dcap-qvl against the demo's root CA, every token checked against its JWKS by an independent JOSE library
(jwcrypto), every event log replayed to its quote's RTMRs; and no process of the demo survives it, also when
one of them is killed halfway or the demo is interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest
from jwcrypto import jwk, jwt

from attest.formats.eventlog import decode_event_log
from attest.formats.eventlog.replay import replay
from attest.formats.quote import decode_quote
from tests.conftest import ROOT

STAGES = ["servers", "policy", "guests", "modified-image", "legacy"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tdxsim.cli", "demo", *args]


def _env(tmp: Path) -> dict[str, str]:
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp)}


def _survivors(tmp: Path) -> list[int]:
    """Live processes whose TMPDIR lies in ``tmp``: the demo's children all carry its work folder there."""
    found = []
    prefix = b"TMPDIR=" + str(tmp).encode() + b"/"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if any(item.startswith(prefix) for item in environ.split(b"\0")):
                found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("demo")
    artifacts = base / "artifacts"
    done = subprocess.run(
        _command("--json", "--artifacts", str(artifacts)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(base / "tmp"),
    )
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return {
        "status": done.returncode,
        "stderr": done.stderr,
        "events": events,
        "artifacts": artifacts,
        "survivors": _survivors(base / "tmp"),
    }


def _of(demo: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in demo["events"] if e["event"] == kind]


def test_every_stage_reports_what_happened(demo: dict[str, Any]) -> None:
    assert demo["status"] == 0, demo["stderr"]
    assert [e["stage"] for e in _of(demo, "stage")] == STAGES
    assert {e["name"] for e in _of(demo, "process")} == {"pccs", "host", "verifier", "legacy host"}
    guests = {e["name"]: e for e in _of(demo, "guest")}
    assert set(guests) == {"guest-1", "guest-2", "modified"}
    for name in ("guest-1", "guest-2"):
        assert guests[name]["ok"] and guests[name]["exit"] == 0
        assert guests[name]["verdict"] == "affirming (TCB UpToDate)"
        assert (
            "secret prod/key/disk released: 'disk key 7c1f-payments-prod'"
            in guests[name]["steps"][-1]["detail"]
        )
        assert guests[name]["conversions"] >= 1 and guests[name]["shared_pages"] >= 1
    assert guests["modified"]["exit"] == 1 and "MRTD_MISMATCH" in guests["modified"]["verdict"]
    (memmap,) = _of(demo, "memmap")
    assert memmap["guest"] == "guest-1"
    assert {"private accepted", "shared", "unbacked"} <= {run["state"] for run in memmap["runs"]}
    (summary,) = _of(demo, "summary")
    assert [td["guest"] for td in summary["tds"]] == ["guest-1", "guest-2", "modified"]
    policy_mrtd = _of(demo, "policy")[0]["mrtd"]
    assert [td["mrtd_prefix"] == policy_mrtd[:16] for td in summary["tds"]] == [True, True, False]
    legacy = {e["step"]: e for e in _of(demo, "legacy")}
    assert legacy["host-read"]["data_hex"] == "00" * 12
    assert legacy["td-read"]["code"] == "DATA_LOSS" and legacy["host-exit"]["status"] == 3
    assert _of(demo, "done") == [{"event": "done", "time": _of(demo, "done")[0]["time"], "status": 0}]
    assert demo["survivors"] == []


def test_the_artifacts_verify_with_independent_tools(demo: dict[str, Any]) -> None:
    folder: Path = demo["artifacts"]
    (listing,) = _of(demo, "artifacts")
    assert {"root_ca.der", "collateral.json", "jwks.json"} <= set(listing["files"])
    root = (folder / "root_ca.der").read_bytes()
    collateral = dcap_qvl.QuoteCollateralV3.from_json((folder / "collateral.json").read_text())
    keys = jwk.JWKSet.from_json((folder / "jwks.json").read_text())
    guests = sorted(p for p in folder.iterdir() if p.is_dir())
    assert [p.name for p in guests] == ["guest-1", "guest-2", "modified"]
    for guest in guests[:2]:
        quote = (guest / "quote.bin").read_bytes()
        at = int((guest / "verify_at").read_text())
        verified = dcap_qvl.verify_with_root_ca(quote, collateral, root, at)
        assert verified.status == "UpToDate"
        token = jwt.JWT(jwt=(guest / "token.jwt").read_text(), key=keys, algs=["ES256"])
        claims = json.loads(token.claims)
        assert claims["iat"] <= at + 5 and claims["exp"] > claims["iat"]
        tdx = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["tdx"]
        body = decode_quote(quote).body
        assert tdx["mr_td"] == body.mr_td.hex()
        log = decode_event_log((guest / "eventlog.bin").read_bytes())
        assert replay(log) == body.rtmrs
        assert any(body.rtmrs[3])  # the workload's extend reached RTMR3 and the log has it
    # The refused guest leaves its evidence, no token: DCAP accepts its quote, the policy's MRTD refused it.
    modified = folder / "modified"
    assert sorted(p.name for p in modified.iterdir()) == ["eventlog.bin", "quote.bin", "verify_at"]
    assert {"modified/quote.bin", "modified/eventlog.bin", "modified/verify_at"} <= set(listing["files"])
    quote = (modified / "quote.bin").read_bytes()
    at = int((modified / "verify_at").read_text())
    assert dcap_qvl.verify_with_root_ca(quote, collateral, root, at).status == "UpToDate"
    body = decode_quote(quote).body
    (policy,) = _of(demo, "policy")
    assert body.mr_td.hex() != policy["mrtd"]
    assert decode_quote((guests[0] / "quote.bin").read_bytes()).body.mr_td.hex() == policy["mrtd"]
    assert replay(decode_event_log((modified / "eventlog.bin").read_bytes())) == body.rtmrs


def _start(tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _command("--json"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp),
    )


def _wait_for(proc: subprocess.Popen[str], kind: str, **match: Any) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
            return event
    raise AssertionError(
        f"the demo ended before a {kind} event: {proc.wait()} {proc.stderr and proc.stderr.read()}"
    )


def test_a_process_that_dies_halfway_is_named_and_everything_else_stops(tmp_path: Path) -> None:
    proc = _start(tmp_path / "tmp")
    try:
        _wait_for(proc, "stage", stage="guests")
        verifier = next(iter(_survivors_named(tmp_path / "tmp", "verifier")), None)
        assert verifier is not None
        os.kill(verifier, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert err == (
        f"tdxsim demo: the verifier (pid {verifier}) died with status {-signal.SIGKILL}; "
        "every other process is stopped\n"
    )
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1] == {"event": "done", "time": events[-1]["time"], "status": 1}
    assert _deadline_survivors(tmp_path / "tmp") == []


def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    proc = _start(tmp_path / "tmp")
    try:
        _wait_for(proc, "process", name="verifier")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert _deadline_survivors(tmp_path / "tmp") == []


def _survivors_named(tmp: Path, role: str) -> list[int]:
    out = []
    for pid in _survivors(tmp):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if role.encode() in cmdline and b"tdxsim.cli" in cmdline:
            out.append(pid)
    return out


def _deadline_survivors(tmp: Path) -> list[int]:
    """Survivors, allowing the kernel a moment to reap what was just killed."""
    deadline = time.monotonic() + 10
    while (left := _survivors(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left
